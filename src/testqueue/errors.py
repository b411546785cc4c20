"""The exception tree. Each class docstring is its default message.

    TestqueueError
    ├── BadRequest            400
    ├── Unauthorized          401
    ├── Forbidden             403
    ├── NotFound              404
    ├── InvalidTransition     409
    ├── InvalidInput          422
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


class RunnerError(TestqueueError):
    """The runner could not run the execution."""


class RunnerTimeout(RunnerError):
    """The run passed its deadline and was stopped."""


class RunnerCrashed(RunnerError):
    """The runner failed unexpectedly."""


class RunnerUnavailable(RunnerError):
    """No runner of this kind is installed on this worker."""
