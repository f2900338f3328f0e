"""HTTP API of the tuner service (FastAPI), JSON-compatible with inferno's tuner (gin) endpoints.

POST /tune, POST /calibrate ([]ServerSpec) -> ModelData (422 {"error"} if nothing to return);
GET /getparams?model=&accelerator=; GET /warmup; POST /merge (ModelData); GET /calibration-status; GET /healthz.
Bodies bind as Go binds them: malformed JSON, a body of the wrong shape or a field of the wrong JSON type
(a string or a fraction for a token count) is a 400; bad observations are skipped with a reason (listed in
"issues"), never a crash. Tuning is locked per (model, accelerator) and runs in worker processes (or, with
``workers=0``, in threads of this one), so cheap GETs never wait behind it, not even for the interpreter lock.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..web import BodyLimit, install_error_handlers, validation_message
from ..wire import ModelData, ServerSpec, wire_dict
from .errors import TunerError
from .service import ServiceSettings, TunerService

__all__ = ["create_app"]

MAX_BODY_BYTES = 16 * 1024 * 1024
# Without worker processes, tuning is CPU-bound Python in threads: more than this add no throughput, only
# contention for the interpreter lock that slows the event loop's answers to the cheap GETs.
TUNE_THREADS = 2
SPECS_BODY = "request body must be a non-empty JSON array of ServerSpec"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def _bind_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Go answers 400 to a body that does not bind; an array entry that is not an object was always a
    per-entry 422 here (kept: clients rely on it)."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return _error(400, f"invalid JSON: {validation_message(exc)}")
    if request.url.path in ("/tune", "/calibrate"):
        if len(loc) == 1:
            return _error(400, SPECS_BODY)
        if len(loc) == 2 and first.get("type") in ("model_type", "model_attributes_type", "dict_type"):
            return _error(422, f"specs[{loc[1]}]: expected an object, got {first.get('input')!r}")
        return _error(400, "invalid request body: " + validation_message(exc).replace("body[", "specs[", 1))
    return _error(400, "invalid request body: " + validation_message(exc))


def _warm_up() -> None:
    from . import ekf, estimators, perfmodel  # noqa: F401  (numpy, scipy and the perf models, once per worker)


def create_app(service: TunerService | None = None, settings: ServiceSettings | None = None,
               address: str = "", workers: int = 0) -> FastAPI:
    """The FastAPI app around one TunerService (default: settings from the environment).

    `workers` > 0 runs the pairs' tuning in that many worker processes (spawned and warmed up when the app
    starts); 0 runs it in threads of this process. `address` is only named in the start log line.
    """
    svc = service or TunerService(settings or ServiceSettings.from_env())
    pool = ThreadPoolExecutor(max(TUNE_THREADS, workers), thread_name_prefix="tune")

    async def off_loop(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if workers > 0:
            svc.workers = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            await asyncio.gather(*(asyncio.wrap_future(svc.workers.submit(_warm_up)) for _ in range(workers)))
        if address:
            print(f"inferno-mip tuner listening on {address} ({svc.settings.mode}"
                  f"{', compat' if svc.settings.compat else ''}, {workers or 'no'} worker processes)",
                  file=sys.stderr, flush=True)
        try:
            yield
        finally:
            pool.shutdown(wait=False)
            if svc.workers is not None:
                svc.workers.shutdown(wait=False, cancel_futures=True)
                svc.workers = None

    app = FastAPI(title="inferno-mip tuner", version="1", lifespan=lifespan)
    app.state.service = svc
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES, key="error")
    install_error_handlers(app, lambda path: 400, key="error")
    app.add_exception_handler(RequestValidationError, _bind_error)

    async def specs_call(specs: list[ServerSpec], fn) -> JSONResponse:
        if not specs:
            return _error(400, SPECS_BODY)
        try:
            result, issues = await off_loop(fn, [wire_dict(s) for s in specs])
        except TunerError as exc:
            return _error(422, str(exc))
        if issues:
            result = {**result, "issues": issues}
        return JSONResponse(result)

    @app.post("/tune", response_model=ModelData)
    async def tune(specs: list[ServerSpec]):
        """One control cycle: per-replica ServerSpecs in, tuned alpha/beta/gamma per (model, accelerator) out."""
        return await specs_call(specs, svc.tune)

    @app.post("/calibrate", response_model=ModelData)
    async def calibrate(specs: list[ServerSpec]):
        """A deliberately diverse load sweep per (model, accelerator): a one-shot fit."""
        return await specs_call(specs, svc.calibrate)

    @app.get("/getparams")
    async def getparams(model: str | None = None, accelerator: str | None = None):
        if not model or not accelerator:
            return _error(400, "query parameters 'model' and 'accelerator' are required")
        p = svc.get_params(model, accelerator)
        if p is None:
            return _error(404, f"no parameters for model {model!r} on accelerator {accelerator!r}")
        return p

    @app.get("/warmup")
    async def warmup():
        return {"warmingUp": svc.warming_up()}

    @app.post("/merge", response_model=ModelData)
    async def merge(request: Request, model_data: ModelData | None = Body(None)):
        """The controller's ModelData with tuned perfParms overlaid; stored pairs it lacks are appended."""
        if not await request.body():
            return _error(400, "invalid request body: empty (a ModelData object is required)")
        data = {} if model_data is None else wire_dict(model_data)
        try:
            return JSONResponse(await off_loop(svc.merge, data))
        except TunerError as exc:
            return _error(400, str(exc))

    @app.get("/calibration-status")
    async def calibration_status():
        return {"statuses": svc.calibration_statuses()}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "pairs": len(svc.params()), "warmingUp": svc.warming_up()}

    return app
