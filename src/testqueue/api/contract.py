"""What the OpenAPI document says about errors, so it matches every answer.

Every error is `{"detail": ...}`: a sentence, or for a request that does not
fit its schema a list of problems with where they are. Routes name the
errors of their own rules (`errors(403, 404)`); the ones any route of a kind
can give are added to the document here: 401 where a token is needed, 400,
413 and 422 where a body is read, 422 where parameters are, and 503 (the
database could not be reached) everywhere.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from testqueue.vocabulary import RunnerKind


class Problem(BaseModel):
    """One thing wrong with a request."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorDetail(BaseModel):
    detail: str | list[Problem] = Field(
        description="what is wrong and what to do about it: a sentence, or the problems "
        "of a request that does not fit its schema"
    )


MEANINGS = {
    400: "the request cannot be read or carried out as given",
    401: "no valid token: sign in, or send a personal access token",
    403: "your account may not do this",
    404: "there is no such thing",
    409: "it is not in a state that allows this: read it again",
    413: "the body is larger than MAX_BODY_BYTES",
    422: "a value cannot be used: the detail says which and why",
    429: "too many attempts, or the queue is full: wait the seconds in Retry-After",
    503: "the database cannot be reached now: try again after Retry-After seconds",
}
_REF = {"$ref": "#/components/schemas/ErrorDetail"}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route for the errors its own rules give."""
    return {code: {"model": ErrorDetail, "description": MEANINGS[code]} for code in codes}


def install(app: FastAPI, runner_kinds: list[str]) -> None:
    """Make `app.openapi()` add the errors every route of a kind gives, and what the
    models cannot say themselves (the runner kinds this server knows)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
            )
            _add_common_errors(document)
            _describe_test_cases(document, runner_kinds)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def repeatable(app: FastAPI, path: str, method: str) -> frozenset[str]:
    """The query parameters of an operation that take a list, so may be given more than once."""
    operation = app.openapi()["paths"].get(path, {}).get(method.lower(), {})
    return frozenset(
        param["name"]
        for param in operation.get("parameters", [])
        if param.get("in") == "query" and _takes_list(param.get("schema", {}))
    )


def _takes_list(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "array" or any(_takes_list(s) for s in schema.get("anyOf", []))


def _add_common_errors(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    detail = ErrorDetail.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(detail.pop("$defs", {}))
    schemas["ErrorDetail"] = detail
    for schema_name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(schema_name, None)
    for item in document.get("paths", {}).values():
        for operation in item.values():
            codes = {503}
            if operation.get("security"):
                codes.add(401)
            if "requestBody" in operation:
                codes |= {400, 413, 422}
            if operation.get("parameters"):
                codes.add(422)
            responses = operation.setdefault("responses", {})
            for code in sorted(codes):
                responses[str(code)] = _error(code)
            for code, response in responses.items():
                if code.startswith(("4", "5")):
                    response["content"] = {"application/json": {"schema": _REF}}


def _error(code: int) -> dict[str, Any]:
    return {"description": MEANINGS[code], "content": {"application/json": {"schema": _REF}}}


def _describe_test_cases(document: dict[str, Any], runner_kinds: list[str]) -> None:
    """A command test case needs its argv; the runner is one this server knows."""
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("TestCaseCreate", "TestCaseUpdate"):
        runner = schemas.get(name, {}).get("properties", {}).get("runner")
        if runner is None:
            continue
        kinds = {"type": "string", "enum": sorted(runner_kinds)}
        if "anyOf" in runner:  # optional in an update
            runner["anyOf"] = [kinds, {"type": "null"}]
        else:
            runner.update(kinds)
    create = schemas.get("TestCaseCreate")
    if create is not None:
        create["anyOf"] = [
            {
                "required": ["runner"],
                "properties": {"runner": {"not": {"const": RunnerKind.COMMAND.value}}},
            },
            {
                "required": ["command"],
                "properties": {"command": {"type": "array", "minItems": 1}},
            },
        ]
