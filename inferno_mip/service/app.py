"""The optimizer app: inferno's REST API, the native ``/v1`` API, ``/healthz`` and Prometheus ``/metrics``."""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..web import BodyLimit, install_error_handlers
from .context import ApiError, ServiceContext, ServiceSettings
from .inferno import inferno_router
from .metrics import CONTENT_TYPE_LATEST
from .native import native_router
from .schemas import Health

__all__ = ["create_app"]


def _validation_status(path: str) -> int:
    """inferno's Go server answers a body that does not bind with 400; the native API with 422."""
    return 422 if path.startswith("/v1/") else 400


def create_app(settings: ServiceSettings | None = None, address: str = "") -> FastAPI:
    """An optimizer app; its worker pool starts with the app (uvicorn's lifespan) and stops with it.

    `address` is only named in the start log line.
    """
    settings = settings or ServiceSettings()
    ctx = ServiceContext(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        ctx.runner.start()
        mode = "stateful" if settings.stateful else "stateless"
        where = f" on {address}" if address else ""
        print(f"inferno-mip optimizer listening{where} ({mode}{', compat' if settings.compat else ''}, "
              f"{settings.workers} solve worker(s), time limit {settings.time_limit:g} s)", file=sys.stderr,
              flush=True)
        try:
            yield
        finally:
            ctx.runner.stop()

    app = FastAPI(title="inferno-mip optimizer", version="1", lifespan=lifespan,
                  description="inferno's optimizer REST API (wire-compatible) and a native API over "
                              "inferno_mip.solve().")
    app.state.context = ctx
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    install_error_handlers(app, _validation_status)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(status_code=exc.status, content={"message": exc.message})

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        ctx.metrics.requests.labels(getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz():
        return Health(status="ok", mode="stateful" if settings.stateful else "stateless", compat=settings.compat,
                      workers=settings.workers)

    @app.get("/metrics", tags=["ops"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
    async def metrics():
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(native_router(ctx))
    app.include_router(inferno_router(ctx))
    return app
