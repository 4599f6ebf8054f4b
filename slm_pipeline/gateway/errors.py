"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class GatewayError(Exception):
    """A request the gateway answers itself, with an HTTP status and OpenAI's error body."""

    def __init__(self, status: int, message: str, type_: str, code: str | None = None,
                 param: str | None = None, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.reason = reason or code or type_  # the counter it is reported under

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, headers: dict[str, str] | None = None) -> Response:
        return Response(orjson.dumps(self.body()), self.status, headers=headers, media_type="application/json")


def unauthorized(message: str) -> GatewayError:
    return GatewayError(401, message, "invalid_request_error", "invalid_api_key")


def bad_request(message: str, code: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", code, param)
