"""The whole service in one ASGI app: the API, the dashboard and (in `serve`) a dispatcher."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from argon2 import PasswordHasher
from fastapi import FastAPI

from testqueue import api, web
from testqueue.config import Settings
from testqueue.database import Database, migrate
from testqueue.dispatcher import Dispatcher
from testqueue.middleware import BodyLimit, DatabaseLost
from testqueue.runners import Registry
from testqueue.services.accounts import Accounts, Bootstrap
from testqueue.shutdown import StopSignal
from testqueue.state import AppState


def create_app(
    settings: Settings,
    *,
    registry: Registry | None = None,
    with_worker: bool = True,
    on_bootstrap: Callable[[Bootstrap], None] | None = None,
    hasher: PasswordHasher | None = None,
) -> FastAPI:
    """The whole HTTP side; with `with_worker`, this process also runs a dispatcher."""
    db = Database(settings)
    state = AppState(
        settings=settings,
        db=db,
        registry=registry or Registry(settings),
        accounts=Accounts(settings, db, hasher),
    )

    stop = StopSignal()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Inside the server's own signal handling, so there is one to wrap.
        stop.install()
        await asyncio.to_thread(migrate, settings)
        bootstrap = await state.accounts.start()
        if bootstrap is not None and on_bootstrap is not None:
            on_bootstrap(bootstrap)
        if with_worker:
            state.dispatcher = Dispatcher(settings, state.db, state.registry)
            await state.dispatcher.start()
        # What start-up made (modules, schemas, compiled statements) lives as long as the
        # process: out of the collector's reach, a full collection under load scans only
        # what requests made, not the whole heap.
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            if state.dispatcher is not None:
                await state.dispatcher.stop()
            state.accounts.close()
            await state.db.dispose()
            stop.remove()

    app = FastAPI(
        title="testqueue",
        summary="A durable priority queue that runs test executions within a global limit.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.testqueue = state
    app.state.stop_signal = stop
    app.add_middleware(DatabaseLost)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    api.mount(app)
    web.mount(app)
    return app
