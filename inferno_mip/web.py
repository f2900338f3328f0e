"""HTTP plumbing shared by the optimizer and tuner services: a request body size limit and JSON error answers."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .wire import describe_error

__all__ = ["BodyLimit", "install_error_handlers", "validation_message"]


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is answered 413 with a message, without reading the rest."""

    def __init__(self, app, limit: int, key: str = "message"):
        self.app = app
        self.limit = limit
        self.key = key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send, int(declared))
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except _TooLarge:
            if not started:
                await self._reject(send, received)

    async def _reject(self, send, size: int) -> None:
        body = json.dumps({self.key: f"request body of {size} bytes exceeds the limit of {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def validation_message(exc: RequestValidationError) -> str:
    """One line naming the field and value; malformed JSON says where it broke."""
    errors = exc.errors()
    if errors and errors[0].get("type") == "json_invalid":
        ctx = errors[0].get("ctx") or {}
        return f"body: malformed JSON: {ctx.get('error', errors[0].get('msg', 'invalid'))}"
    if errors and errors[0].get("type") == "missing" and tuple(errors[0].get("loc", ())) == ("body",):
        return "body: missing (a JSON body is required)"
    return describe_error(errors)


def install_error_handlers(app: FastAPI, status_for, key: str = "message") -> None:
    """Validation errors answered `status_for(path)` and anything unexpected 500, both as ``{key: message}``."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=status_for(request.url.path), content={key: validation_message(exc)})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # last resort: a JSON answer, never a dropped request
        return JSONResponse(status_code=500, content={key: f"internal error: {type(exc).__name__}: {exc}"})
