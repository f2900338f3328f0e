"""``inferno-mip serve-optimizer``: the optimizer HTTP service (inferno's REST API and the native one)."""

from __future__ import annotations

import os
import sys

__all__ = ["register"]

EXIT_BAD_INPUT = 2


def register(subparsers) -> None:
    p = subparsers.add_parser("serve-optimizer", help="run the optimizer HTTP service (inferno's REST API, /v1)")
    p.add_argument("--host", help="address to listen on (default $INFERNO_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default $INFERNO_PORT or 8080)")
    p.add_argument("--stateful", action="store_true",
                   help="inferno's stateful mode: set/get/add/remove endpoints, /optimize, /applyAllocation")
    p.add_argument("--compat", action="store_true",
                   help="inferno's answers: its greedy, Go's fields only, 404 when a server gets no allocation")
    p.add_argument("--workers", type=int, default=2, help="solve worker processes (0: one in-process thread)")
    p.add_argument("--time-limit", type=float, default=30.0, help="seconds, the most one solve may take")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body accepted, MiB")
    p.set_defaults(run=run_serve)


def run_serve(args) -> int:
    from .context import ServiceSettings

    host = args.host or os.environ.get("INFERNO_HOST") or "127.0.0.1"
    port_text = str(args.port) if args.port is not None else os.environ.get("INFERNO_PORT") or "8080"
    try:
        port = int(port_text)
    except ValueError:
        print(f"error: port: expected an integer (--port or $INFERNO_PORT), got {port_text!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        settings = ServiceSettings(stateful=args.stateful, compat=args.compat, workers=args.workers,
                                   time_limit=args.time_limit, max_body_bytes=int(args.max_body_mb * 1024 * 1024))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not 0 <= port <= 65535:
        print(f"error: port: must be 0..65535, got {port}", file=sys.stderr)
        return EXIT_BAD_INPUT
    import uvicorn

    from .app import create_app

    app = create_app(settings, address=f"http://{host}:{port}")
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
