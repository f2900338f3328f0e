"""Solves off the event loop: a pool of worker processes, each solve with a time limit.

Sizing and the MIP are CPU-bound Python and numpy; in worker processes they neither hold the event loop's
GIL nor queue cheap requests behind them. Workers are spawned (never forked from a threaded server) and
warmed up at start so that the first request does not pay for imports.

Identical requests in flight share one solve: a request equal to one already being solved (same system,
solver, options and parameters) waits for that solve's answer instead of queueing a second one. A solve is
a pure function of its request, so the answer is the one it would have got; several controllers (or
retries of one) sending the same system then cost one solve, not one per sender.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from ..solution import Solution

__all__ = ["BadInput", "SolveJob", "SolveRunner", "SolveTimeout", "run_job"]

GRACE_SECONDS = 5.0  # beyond the solve's own time limit before the request is answered 504


class SolveTimeout(Exception):
    """A solve did not come back within its time limit plus grace."""


class BadInput(Exception):
    """The scenario or an option is invalid (a picklable carrier of the one-line message)."""


@dataclass(frozen=True)
class SolveJob:
    """What a worker needs: inferno's SystemData as a dict, the solver, options and tuned params."""

    system_data: dict
    solver: str | None
    options: dict
    params: dict | None = None

    def key(self) -> str:
        """A digest of everything the answer depends on (equal jobs, equal keys)."""
        text = json.dumps([self.system_data, self.solver, self.options, self.params], sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


_WORKER = threading.local()  # per worker (process or thread): its sizing cache, kept across requests


def run_job(job: SolveJob) -> Solution:
    """Parse and solve in the worker (parsing there too keeps big bodies' CPU off the event loop). Each worker
    keeps the sizing of the servers it has seen: a controller's next request for the same fleet, with new
    loads, re-sizes nothing (the answer is the same as without it)."""
    from ..api import solve
    from ..io import parse_system
    from ..tables import SizingCache

    if not hasattr(_WORKER, "cache"):
        _WORKER.cache = SizingCache()
    try:
        system = parse_system(job.system_data, source="request")
        return solve(system, solver=job.solver, params=job.params, sizing_cache=_WORKER.cache, **job.options)
    except (ValueError, TypeError) as exc:  # ScenarioError and TunerError are ValueErrors
        raise BadInput(str(exc)) from None


def _warm_up() -> float:
    import inferno_mip.solvers  # noqa: F401  (imports every backend once)

    return time.perf_counter()


class SolveRunner:
    """A process pool (``workers`` > 0) or one in-process thread (``workers`` = 0, for debugging)."""

    def __init__(self, workers: int, time_limit: float):
        self.workers = workers
        self.time_limit = time_limit
        self._pool: Executor | None = None
        self._in_flight: dict[str, asyncio.Future] = {}  # job key -> its solve, while it runs

    def start(self, warm: bool = True) -> None:
        """Start the pool; with `warm`, wait until every worker has imported the solvers."""
        if self.workers > 0:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            for future in [self._pool.submit(_warm_up) for _ in range(self.workers)]:
                if warm:
                    future.result()
        else:
            self._pool = ThreadPoolExecutor(1)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def limit(self, requested: float | None) -> float:
        """The time limit of one solve: the request's, capped by the server's."""
        return self.time_limit if requested is None else min(requested, self.time_limit)

    async def solve(self, job: SolveJob) -> tuple[Solution, bool]:
        """Run `job` in the pool, or wait for an identical job already running there: (its solution, whether
        the solve was shared); :class:`SolveTimeout` if it overruns its limit plus grace."""
        if self._pool is None:
            raise RuntimeError("solve runner not started")
        limit = self.limit(job.options.get("time_limit"))
        job = SolveJob(job.system_data, job.solver, {**job.options, "time_limit": limit}, job.params)
        key = job.key()
        running = self._in_flight.get(key)
        shared = running is not None
        if not shared:
            running = self._in_flight[key] = asyncio.ensure_future(self._run(job, limit))
            running.add_done_callback(lambda _: self._in_flight.pop(key, None))
        return await asyncio.shield(running), shared  # a client that goes away does not cancel the others' solve

    async def _run(self, job: SolveJob, limit: float) -> Solution:
        future = asyncio.get_running_loop().run_in_executor(self._pool, run_job, job)
        try:
            return await asyncio.wait_for(future, timeout=limit + GRACE_SECONDS)
        except asyncio.TimeoutError:
            raise SolveTimeout(f"solve did not finish within its time limit of {limit:g} s") from None
        except BrokenProcessPool:  # a worker died (e.g. killed for memory): a fresh pool for the next request
            self.stop()
            self.start(warm=False)  # never block the event loop on imports
            raise

