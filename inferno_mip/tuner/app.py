"""HTTP API of the tuner service (FastAPI), JSON-compatible with inferno's tuner (gin) endpoints.

POST /tune, POST /calibrate ([]ServerSpec) -> ModelData (422 {"error"} if nothing to return);
GET /getparams?model=&accelerator=; GET /warmup; POST /merge (ModelData); GET /calibration-status.
Bad JSON -> 400; bad observations are skipped with a reason (listed in "issues"), never a crash.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .errors import TunerError
from .service import ServiceSettings, TunerService

__all__ = ["create_app"]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


async def _body(request: Request) -> tuple[Any, JSONResponse | None]:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, _error(400, f"invalid JSON: {exc}")
    return data, None


def create_app(service: TunerService | None = None, settings: ServiceSettings | None = None) -> FastAPI:
    """The FastAPI app around one TunerService (default: settings from the environment)."""
    svc = service or TunerService(settings or ServiceSettings.from_env())
    app = FastAPI(title="inferno-mip tuner", version="1")
    app.state.service = svc

    async def specs_call(request: Request, fn) -> JSONResponse:
        data, err = await _body(request)
        if err:
            return err
        if not isinstance(data, list) or not data:
            return _error(400, "request body must be a non-empty JSON array of ServerSpec")
        try:
            result, issues = fn(data)
        except TunerError as exc:
            return _error(422, str(exc))
        if issues:
            result = {**result, "issues": issues}
        return JSONResponse(result)

    @app.post("/tune")
    async def tune(request: Request):
        return await specs_call(request, svc.tune)

    @app.post("/calibrate")
    async def calibrate(request: Request):
        return await specs_call(request, svc.calibrate)

    @app.get("/getparams")
    def getparams(model: str | None = None, accelerator: str | None = None):
        if not model or not accelerator:
            return _error(400, "query parameters 'model' and 'accelerator' are required")
        p = svc.get_params(model, accelerator)
        if p is None:
            return _error(404, f"no parameters for model {model!r} on accelerator {accelerator!r}")
        return p

    @app.get("/warmup")
    def warmup():
        return {"warmingUp": svc.warming_up()}

    @app.post("/merge")
    async def merge(request: Request):
        data, err = await _body(request)
        if err:
            return err
        if not isinstance(data, dict) or not data:
            return _error(400, "request body must be a non-empty ModelData object")
        try:
            return svc.merge(data)
        except TunerError as exc:
            return _error(400, str(exc))

    @app.get("/calibration-status")
    def calibration_status():
        return {"statuses": svc.calibration_statuses()}

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # last resort: a JSON error, never a dropped request
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    return app
