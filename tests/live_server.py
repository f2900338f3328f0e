"""Run an ``inferno-mip serve-*`` command as a real uvicorn process on 127.0.0.1 (a free port) for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(command: str, *args: str, **kwargs):
    """Start ``inferno-mip <command> --host 127.0.0.1 --port P <args>``; yields its base URL; stops it after."""
    with launch(command, *args, **kwargs) as (url, _):
        yield url


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of the live processes of a process group (a server and its solve workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command: state ppid pgrp ... utime(11) stime(12)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def launch(command: str, *args: str, ready: str = "/healthz", timeout: float = 120.0, env: dict | None = None,
           cwd: Path = ROOT):
    """As :func:`serve` (the package found from `cwd`), yielding (base URL, process group id)."""
    port = free_port()
    cmd = [sys.executable, "-m", "inferno_mip.cli", command, "--host", "127.0.0.1", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{command} exited with {proc.returncode}: {proc.stdout.read()}")
            try:
                if httpx.get(url + ready, timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command} did not come up within {timeout} s")
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


def run_clients(client, n: int, timeout: float = 600.0) -> None:
    """client(k) for k in 0..n-1, each in its own thread, all at once; returns when all are done."""
    threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
