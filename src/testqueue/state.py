"""What one app instance shares between requests, for the API and the dashboard alike."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from testqueue.config import Settings
from testqueue.database import Database
from testqueue.dispatcher import Dispatcher
from testqueue.runners import Registry
from testqueue.services.accounts import Accounts


@dataclass
class AppState:
    """The settings, the database, the runners, the accounts and (in `serve`) the dispatcher."""

    settings: Settings
    db: Database
    registry: Registry
    accounts: Accounts
    dispatcher: Dispatcher | None = None


def get_state(connection: HTTPConnection) -> AppState:
    state: AppState = connection.app.state.testqueue
    return state
