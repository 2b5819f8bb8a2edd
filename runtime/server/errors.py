"""The one error shape of the HTTP API and the handlers that produce it.

Every error a client sees is `{"object": "error", "message", "type", "param", "code": <status>}`.
Invalid input is a 400 raised from validation; FastAPI's 422 never reaches a client. A fault the
server did not expect is logged with its traceback and answered with a fixed 500 message, never with
the exception's text.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

# HTTP status -> the `type` field of the error body (OpenAI's spelling where it has one).
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    500: "server_error",
    503: "service_unavailable_error",
}


class APIError(Exception):
    """An error answered to the client in the error shape."""

    def __init__(self, status: int, message: str, param: str | None = None, err_type: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.err_type = err_type or ERROR_TYPES.get(status, "invalid_request_error")


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param)


def not_found(message: str, param: str | None = None) -> APIError:
    return APIError(404, message, param)


def error_body(status: int, message: str, param: str | None = None, err_type: str | None = None) -> dict:
    return {
        "object": "error",
        "message": message,
        "type": err_type or ERROR_TYPES.get(status, "invalid_request_error"),
        "param": param,
        "code": status,
    }


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error_body(error.status, error.message, error.param, error.err_type), error.status)


_UNION_TAGS = frozenset({"str", "int", "float", "bool"})


def _is_union_tag(part: object) -> bool:
    text = str(part)
    return text in _UNION_TAGS or "[" in text or text.startswith(("function-", "constrained-"))


def _format_loc(loc: tuple) -> str:
    # ("body", "messages", 0, "role") -> "messages.0.role", ("query", "after") -> "after"; drop
    # pydantic's union-branch labels.
    parts = loc[1:] if loc[:1] in (("body",), ("query",), ("path",)) else loc
    return ".".join(str(p) for p in parts if not _is_union_tag(p))


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """A readable message and the offending parameter from pydantic's error list."""
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    if tuple(first.get("loc", ())) == ("body",) and first.get("type") in ("model_attributes_type", "dict_type"):
        return "request body must be a JSON object", None
    param = _format_loc(tuple(first.get("loc", ()))) or None
    text = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        return f"missing required parameter: {param}", param
    return (f"invalid parameter {param}: {text}" if param else text), param


async def _on_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(exc)


async def _on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param = validation_message(list(exc.errors()))
    return error_response(bad_request(message, param))


async def _on_http_exception(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    headers = getattr(exc, "headers", None)
    return JSONResponse(error_body(status, message), status, headers=headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error serving %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body(500, "internal server error"), 500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
