"""The exception tree. Each class docstring is its default message.

    TestqueueError
    ├── BadRequest            400
    ├── Unauthorized          401
    ├── Forbidden             403
    ├── NotFound              404
    ├── InvalidTransition     409
    ├── InvalidInput          422
    ├── TooManyRequests       429 (with Retry-After)
    ├── Unavailable           503 (with Retry-After)
    └── RunnerError           (recorded on the execution, never sent as HTTP)
        ├── RunnerTimeout
        ├── RunnerCrashed
        └── RunnerUnavailable

`api.app.create_app` maps the tree to HTTP statuses in one handler.
"""

from __future__ import annotations


class TestqueueError(Exception):
    """Something went wrong in testqueue."""

    status_code = 400

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        super().__init__(self.message)


class BadRequest(TestqueueError):
    """The request cannot be carried out as given."""

    status_code = 400


class Unauthorized(TestqueueError):
    """Sign in first: send `Authorization: Bearer <token>` from POST /api/v1/auth/login."""

    status_code = 401


class Forbidden(TestqueueError):
    """Your account does not have the right to do this."""

    status_code = 403


class NotFound(TestqueueError):
    """No such thing."""

    status_code = 404


class InvalidTransition(TestqueueError):
    """The execution is not in a state that allows this."""

    status_code = 409


class InvalidInput(TestqueueError):
    """A field has a value that cannot be used."""

    status_code = 422


class TooManyRequests(TestqueueError):
    """Too many attempts: wait and try again."""

    status_code = 429

    def __init__(self, message: str | None = None, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)


class Unavailable(TestqueueError):
    """The service cannot answer this now: try again shortly."""

    status_code = 503

    def __init__(self, message: str | None = None, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)


class RunnerError(TestqueueError):
    """The runner could not run the execution."""


class RunnerTimeout(RunnerError):
    """The run passed its deadline and was stopped."""


class RunnerCrashed(RunnerError):
    """The runner failed unexpectedly."""


class RunnerUnavailable(RunnerError):
    """No runner of this kind is installed on this worker."""
