"""Errors of the HTTP API in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with a 4xx status
for anything a client can cause (used by every route module of roost.serve).
"""

from __future__ import annotations

from fastapi.responses import JSONResponse


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}


def queue_full(e: Exception) -> ApiError:
    """The engine's queue is full (`QueueFull`): 429 with Retry-After."""
    return ApiError(429, f"server busy: {e}", "rate_limit_error", code="queue_full", headers={"Retry-After": "1"})


def _error(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)
