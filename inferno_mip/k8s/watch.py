"""List-then-watch that survives API server restarts, expired resource versions (410 Gone) and timeouts.

Every (re)list replays its items as ADDED events, so a consumer that is level-triggered (reconciles the state
it finds) misses nothing while the connection was down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .kubeapi import REQUEST_TIMEOUT, api_errors, describe, is_status

log = logging.getLogger("inferno_mip.k8s")
MAX_BACKOFF = 30.0


def resource_version(obj) -> str | None:
    if isinstance(obj, dict):
        return (obj.get("metadata") or {}).get("resourceVersion")
    return obj.metadata.resource_version


def watch_forever(list_fn: Callable, handle: Callable[[str, object], None], stop: threading.Event, what: str,
                  watch_seconds: int = 60, **kwargs) -> None:
    """Call ``handle(event_type, object)`` for every item of ``list_fn(**kwargs)`` and every later change."""
    from kubernetes import watch

    version, backoff = None, 0.5
    while not stop.is_set():
        try:
            if version is None:
                listing = list_fn(_request_timeout=REQUEST_TIMEOUT, **kwargs)
                items = listing["items"] if isinstance(listing, dict) else listing.items
                version = (listing["metadata"]["resourceVersion"] if isinstance(listing, dict)
                           else listing.metadata.resource_version)
                for item in items:
                    handle("ADDED", item)
            stream = watch.Watch()
            for event in stream.stream(list_fn, resource_version=version, timeout_seconds=watch_seconds,
                                       _request_timeout=(REQUEST_TIMEOUT[0], watch_seconds + 5), **kwargs):
                if stop.is_set():
                    stream.stop()
                    break
                obj = event["object"]
                if event["type"] == "ERROR":  # typically 410 Gone: the version is too old; list again
                    version = None
                    break
                version = resource_version(obj) or version
                handle(event["type"], obj)
            backoff = 0.5
        except api_errors() as exc:
            version = None
            if not is_status(exc, 410):
                log.warning("%s; retrying in %.1fs", describe(exc, f"watch {what}"), backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
