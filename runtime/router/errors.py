"""The API's one error shape, answered by the router itself (the workers' own errors pass through)."""

from __future__ import annotations

from aiohttp import web

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               502: "server_error", 503: "service_unavailable_error", 504: "server_error"}


def error_body(status: int, message: str, param: str | None = None) -> dict:
    return {"object": "error", "message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
            "param": param, "code": status}


def error_response(status: int, message: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(status, message, param), status=status, headers=headers)
