"""The reconciler of Optimizer resources: watch them and the managed Deployments, run a cycle, write the status.

Built on the client's list-and-watch (see ``watch.py``) rather than kopf: it needs no finalizers, annotations or
Events on the resource (so the Role stays at get/list/watch plus status patches), has no process-wide handler
registry, behaves the same against a 1.20 API server as against a new one, and stops cleanly in tests.

Level-triggered: an Optimizer is reconciled when it is created or its spec changes (its generation moves), when a
managed Deployment in its namespace changes (at most once per ``minIntervalSeconds``), and every
``periodSeconds``. One reconcile at a time, as one control loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TextIO

from ..errors import ScenarioError
from ..io import parse_system
from .actuator import KubeActuator
from .collector import KubeCollector
from .cycle import CycleResult, run_cycle
from .kubeapi import REQUEST_TIMEOUT, api_errors, describe, is_status
from .labels import MANAGED_SELECTOR
from .prometheus import DEFAULT_SELECTOR, PrometheusJoin, PrometheusSettings
from .resource import (GROUP, PLURAL, VERSION, OptimizerSpec, SpecError, invalid_status, parse_spec,
                       static_data, status_body)
from .watch import watch_forever

log = logging.getLogger("inferno_mip.k8s")
RETRY_SECONDS = 10.0  # after a resource could not be read


class Operator:
    """Reconciles the Optimizer resources of one namespace (None: all namespaces)."""

    def __init__(self, api, namespace: str | None = None, *, dry_run: bool = False, out: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, watch_seconds: int = 60):
        self.api, self.namespace, self.dry_run, self.out = api, namespace or None, dry_run, out
        self.clock, self.watch_seconds = clock, watch_seconds
        self._cond = threading.Condition()
        self._due: dict[tuple[str, str], float] = {}
        self._last_run: dict[tuple[str, str], float] = {}
        self._generation: dict[tuple[str, str], int] = {}
        self._targets: dict[tuple[str, str], tuple[str | None, float]] = {}  # namespace watched, min interval
        self._deployments: dict[str, tuple] = {}
        self.results: dict[tuple[str, str], CycleResult] = {}

    # ---------------------------------------------------------------------------------------- one reconcile

    def reconcile(self, namespace: str, name: str) -> CycleResult | None:
        """Read the resource, run one cycle for it and write its status; None if it is gone or unusable."""
        from kubernetes import client

        key, where = (namespace, name), f"optimizer {namespace}/{name}"
        objects = client.CustomObjectsApi(self.api)
        try:
            obj = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                       _request_timeout=REQUEST_TIMEOUT)
        except api_errors() as exc:
            if is_status(exc, 404):
                self.forget(key)
                return None
            log.warning("%s", describe(exc, f"read {where}"))
            self.schedule(key, RETRY_SECONDS)
            return None
        generation = obj["metadata"].get("generation")
        previous = obj.get("status") or {}
        with self._cond:
            self._generation[key] = generation
            self._last_run[key] = self.clock()
        try:
            spec = parse_spec(obj.get("spec"), where)
            with self._cond:
                self._targets[key] = (spec.target_namespace(namespace), spec.min_interval_seconds)
            static = static_data(self.api, spec, namespace, where)
        except SpecError as exc:
            log.warning("%s", exc)
            self._write_status(key, invalid_status(str(exc), generation, previous), previous)
            self.schedule(key, RETRY_SECONDS if "configmap" in str(exc) else None)
            return None
        result = self._cycle(spec, namespace, static, where)
        self.results[key] = result
        self._write_status(key, status_body(result, generation, previous), previous)
        log.info("%s: %s", where, _summary(result))
        self.schedule(key, spec.period_seconds)
        return result

    def _cycle(self, spec: OptimizerSpec, namespace: str, static: dict, where: str) -> CycleResult:
        target = spec.target_namespace(namespace)
        join = _prometheus(spec)
        try:
            collector = KubeCollector(self.api, target, spec.selector, spec.startup_delay_seconds, prometheus=join)
            system = None
            try:  # the capacity guard needs the static data; the cycle reports a data error itself
                system = parse_system({"system": {**static, "serverdata": {"servers": []}}}, where)
            except ScenarioError:
                pass
            actuator = KubeActuator(self.api, target, spec.selector, system=system,
                                    dry_run=self.dry_run or spec.dry_run, out=self.out)
            return run_cycle(collector, actuator, static, solver=spec.solver, options=spec.solver_options,
                             source=f"{where} spec.data")
        finally:
            if join is not None:
                join.close()

    def _write_status(self, key: tuple[str, str], body: dict, previous: dict) -> None:
        from kubernetes import client

        for field in ("allocation", "timings"):  # a merge patch keeps map keys unless they are set to null
            if field in body:
                body[field] = {**{k: None for k in previous.get(field) or {}}, **body[field]}
        try:
            client.CustomObjectsApi(self.api).patch_namespaced_custom_object_status(
                GROUP, VERSION, key[0], PLURAL, key[1], {"status": body}, _request_timeout=REQUEST_TIMEOUT)
        except api_errors() as exc:
            log.warning("%s", describe(exc, f"write status of optimizer {key[0]}/{key[1]}"))

    # ---------------------------------------------------------------------------------------- scheduling

    def schedule(self, key: tuple[str, str], delay: float | None) -> None:
        """Reconcile `key` after `delay` seconds (None: not until something changes); the earliest wins."""
        if delay is None:
            return
        with self._cond:
            due = self.clock() + delay
            if due < self._due.get(key, float("inf")):
                self._due[key] = due
                self._cond.notify_all()

    def forget(self, key: tuple[str, str]) -> None:
        with self._cond:
            for table in (self._due, self._last_run, self._generation, self._targets, self.results):
                table.pop(key, None)

    def on_optimizer(self, kind: str, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace"), meta.get("name"))
        if kind == "DELETED":
            self.forget(key)
            return
        with self._cond:
            changed = meta.get("generation") != self._generation.get(key)  # status writes keep the generation
        if changed:
            self.schedule(key, 0.0)

    def on_deployment(self, kind: str, dep) -> None:
        meta = dep.metadata
        signature = (tuple(sorted((meta.labels or {}).items())), dep.spec.replicas if dep.spec else None,
                     dep.status.ready_replicas if dep.status else None)
        with self._cond:
            if kind != "DELETED" and self._deployments.get(meta.uid) == signature:
                return
            if kind == "DELETED":
                self._deployments.pop(meta.uid, None)
            else:
                self._deployments[meta.uid] = signature
            now = self.clock()
            for key, (target, interval) in list(self._targets.items()):
                if target is None or target == meta.namespace:
                    self.schedule(key, max(0.0, self._last_run.get(key, now - interval) + interval - now))

    # ---------------------------------------------------------------------------------------- the loop

    def run(self, stop: threading.Event) -> None:
        """Watch and reconcile until `stop` is set."""
        from kubernetes import client

        objects, apps = client.CustomObjectsApi(self.api), client.AppsV1Api(self.api)
        if self.namespace:
            watches = [(objects.list_namespaced_custom_object, self.on_optimizer, "optimizers",
                        dict(group=GROUP, version=VERSION, namespace=self.namespace, plural=PLURAL)),
                       (apps.list_namespaced_deployment, self.on_deployment, "deployments",
                        dict(namespace=self.namespace, label_selector=MANAGED_SELECTOR))]
        else:
            watches = [(objects.list_cluster_custom_object, self.on_optimizer, "optimizers",
                        dict(group=GROUP, version=VERSION, plural=PLURAL)),
                       (apps.list_deployment_for_all_namespaces, self.on_deployment, "deployments",
                        dict(label_selector=MANAGED_SELECTOR))]
        threads = [threading.Thread(target=watch_forever, args=(fn, handler, stop, what, self.watch_seconds),
                                    kwargs=kwargs, name=f"watch-{what}", daemon=True)
                   for fn, handler, what, kwargs in watches]
        for t in threads:
            t.start()
        try:
            while not stop.is_set():
                key = self._next(stop)
                if key is None:
                    continue
                try:
                    self.reconcile(*key)
                except Exception:  # noqa: BLE001 - one bad reconcile must not end the loop
                    log.exception("reconcile of optimizer %s/%s failed; retrying in %gs", *key, RETRY_SECONDS)
                    self.schedule(key, RETRY_SECONDS)
        finally:
            with self._cond:
                self._cond.notify_all()
            for t in threads:  # daemons: a watch blocked until its timeout must not hold up the exit
                t.join(timeout=5.0)

    def run_once(self) -> dict[tuple[str, str], CycleResult | None]:
        """Reconcile every Optimizer once (in name order) and return the results."""
        from kubernetes import client

        objects = client.CustomObjectsApi(self.api)
        if self.namespace:
            items = objects.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                          _request_timeout=REQUEST_TIMEOUT)["items"]
        else:
            items = objects.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=REQUEST_TIMEOUT)["items"]
        keys = sorted((i["metadata"]["namespace"], i["metadata"]["name"]) for i in items)
        return {key: self.reconcile(*key) for key in keys}

    def _next(self, stop: threading.Event) -> tuple[str, str] | None:
        with self._cond:
            if not self._due:
                self._cond.wait(timeout=1.0)
                return None
            key = min(self._due, key=lambda k: (self._due[k], k))
            wait = self._due[key] - self.clock()
            if wait > 0:
                self._cond.wait(timeout=min(wait, 1.0))
                return None
            del self._due[key]
            return None if stop.is_set() else key


def _prometheus(spec: OptimizerSpec) -> PrometheusJoin | None:
    p = spec.prometheus
    if p is None:
        return None
    token = ""
    if p.token_file:
        try:
            with open(p.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            log.warning("prometheus token file %s: %s", p.token_file, exc.strerror or exc)
    return PrometheusJoin(PrometheusSettings(address=p.address, token=token, selector=p.selector or DEFAULT_SELECTOR,
                                             window=p.window, arrival_metric=p.arrival_metric))


def _summary(result: CycleResult) -> str:
    if not result.ok:
        return f"{result.phase} failed: {result.message}"
    changed = [f"{s.name}: {s.action}" for s in result.servers if s.action not in ("unchanged", "")]
    return (f"{len(result.servers)} servers, {result.solver} {result.solve_status}, cost {result.total_cost:g}; "
            + ("; ".join(changed) if changed else "nothing to change"))
