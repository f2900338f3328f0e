"""KubeActuator: apply Targets to managed Deployments (scale subresource and allocation labels).

- Idempotent: a Deployment already at its target is not written ("unchanged").
- Optimistic concurrency: every write carries the resourceVersion it was computed from; on a conflict (HTTP 409)
  the Deployment is read again and the change recomputed, up to ``conflict_retries`` times.
- Never above capacity (when given the static data): scale-downs go first, and a change that would take an
  accelerator type above its capacity, counting every managed Deployment, is held.
- Servers not named in the targets are left alone (inferno scales them to zero; a server missing from one
  cycle's data must not lose its replicas). A failure on one Deployment leaves it as it was and does not stop
  the others.
- Dry run: prints each write as one JSON line and changes nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

from ..control.protocols import ActuationError, Target
from ..spec import System
from .kubeapi import REQUEST_TIMEOUT, api_errors, describe, is_status, list_managed
from .labels import ACCELERATOR, MAX_BATCH, ManagedDeployment


@dataclass(frozen=True)
class _Change:
    server: str
    deployment: ManagedDeployment
    target: Target


def replica_units(system: System, model: str, accelerator: str) -> tuple[str, int] | None:
    """(accelerator type, capacity units one replica of `model` on `accelerator` takes), None if unknown."""
    acc = system.accelerator_by_name.get(accelerator)
    perf = system.perf_by_key.get((model, accelerator))
    if acc is None or perf is None:
        return None
    return acc.type, acc.multiplicity * perf.acc_count


def usage(system: System, deployments: Mapping[str, ManagedDeployment]) -> dict[str, int]:
    """Capacity units in use per accelerator type by the desired replicas of `deployments`."""
    used: dict[str, int] = {}
    for dep in deployments.values():
        units = replica_units(system, dep.model, dep.accelerator)
        if units is not None:
            used[units[0]] = used.get(units[0], 0) + units[1] * dep.desired
    return used


class KubeActuator:
    """Scale and relabel managed Deployments found by the same selector as the collector's."""

    def __init__(self, api, namespace: str | None = None, selector: str = "", *, system: System | None = None,
                 dry_run: bool = False, out: TextIO | None = None, conflict_retries: int = 5):
        self.api, self.namespace, self.selector = api, namespace or None, selector
        self.system = system if system is not None and not system.optimizer.unlimited else None
        self.dry_run, self.out, self.conflict_retries = dry_run, out, int(conflict_retries)

    def actuate(self, targets: Mapping[str, Target]) -> dict[str, str]:
        where = f"namespace {self.namespace}" if self.namespace else "all namespaces"
        try:
            listing = list_managed(self.api, self.namespace, self.selector)
        except api_errors() as exc:
            raise ActuationError(describe(exc, f"list deployments in {where}")) from None
        done: dict[str, str] = {}
        changes = []
        for server in sorted(targets):
            target, dep = targets[server], listing.deployments.get(server)
            problem = _invalid(target)
            if dep is None:
                done[server] = f"gone: no managed deployment runs server {server!r}"
            elif problem:
                done[server] = f"failed: {problem}"
            else:
                changes.append(_Change(server, dep, target))
        used = usage(self.system, listing.deployments) if self.system is not None else {}
        # scale-downs first, so that the units they free can be used by the scale-ups
        pending = sorted(changes, key=lambda c: (self._growth(c), c.server))
        for _ in range(2):  # a change held for capacity is tried again once the others are applied
            held_changes = []
            for change in pending:
                after, held = self._capacity_after(change, used)
                if held:
                    done[change.server] = held
                    held_changes.append(change)
                    continue
                done[change.server] = self._apply(change)
                if not done[change.server].startswith(("failed", "gone")):
                    used = after
            if len(held_changes) == len(pending):
                break
            pending = held_changes
        return dict(sorted(done.items()))

    def _units(self, model: str, accelerator: str, replicas: int) -> tuple[str, int] | None:
        units = replica_units(self.system, model, accelerator) if self.system is not None else None
        return None if units is None else (units[0], units[1] * replicas)

    def _growth(self, change: _Change) -> int:
        """How much the change adds to its target accelerator type (negative: it frees units there)."""
        dep, target = change.deployment, change.target
        old = self._units(dep.model, dep.accelerator, dep.desired)
        new = self._units(dep.model, target.accelerator, target.replicas)
        if new is None:
            return target.replicas - dep.desired
        return new[1] - (old[1] if old and old[0] == new[0] else 0)

    def _capacity_after(self, change: _Change, used: dict[str, int]) -> tuple[dict[str, int], str]:
        """Units per type once `change` is applied, and why it is held ("" if it is not)."""
        if self.system is None:
            return used, ""
        dep, target = change.deployment, change.target
        new = self._units(dep.model, target.accelerator, target.replicas)
        if new is None:
            return used, (f"held: no perf data for model {dep.model!r} on accelerator {target.accelerator!r}, "
                          "capacity cannot be checked")
        after = dict(used)
        old = self._units(dep.model, dep.accelerator, dep.desired)
        if old is not None:
            after[old[0]] -= old[1]
        after[new[0]] = after.get(new[0], 0) + new[1]
        cap = self.system.capacity.get(new[0], 0)
        if after[new[0]] > cap and after[new[0]] > used.get(new[0], 0):
            return used, (f"held: {target.replicas} replicas on {target.accelerator} would take {new[0]} to "
                          f"{after[new[0]]} units, capacity {cap}")
        return after, ""

    def _apply(self, change: _Change) -> str:
        from kubernetes import client

        apps = client.AppsV1Api(self.api)
        dep = change.deployment
        current = dep.source  # as listed: a stale one costs a conflict and a fresh read, never a wrong write
        for _ in range(self.conflict_retries + 1):
            try:
                if current is None:
                    current = apps.read_namespaced_deployment(dep.name, dep.namespace,
                                                              _request_timeout=REQUEST_TIMEOUT)
                return self._write(apps, current, change.target)
            except api_errors() as exc:
                if is_status(exc, 409):
                    current = None
                    continue
                if is_status(exc, 404):
                    return f"gone: deployment {dep.ref} was deleted"
                return "failed: " + describe(exc, f"update deployment {dep.ref}")
        return f"failed: deployment {dep.ref} kept changing ({self.conflict_retries + 1} conflicts in a row)"

    def _write(self, apps, current, target: Target) -> str:
        meta = current.metadata
        labels = meta.labels or {}
        new_labels = {ACCELERATOR: target.accelerator, MAX_BATCH: str(target.max_batch)}
        relabel = {k: v for k, v in new_labels.items() if labels.get(k) != v}
        replicas = current.spec.replicas if current.spec.replicas is not None else 1
        did = []
        version = meta.resource_version
        if relabel:
            body = {"metadata": {"resourceVersion": version, "labels": relabel}}
            if self._show("PATCH", meta, "", body):
                version = apps.patch_namespaced_deployment(meta.name, meta.namespace, body,
                                                           _request_timeout=REQUEST_TIMEOUT).metadata.resource_version
            did.append(", ".join(f"{k.rsplit('.', 1)[-1]} {labels.get(k, '')!r}->{v!r}" for k, v in relabel.items()))
        if replicas != target.replicas:
            body = {"metadata": {"name": meta.name, "namespace": meta.namespace, "resourceVersion": version},
                    "spec": {"replicas": target.replicas}}
            if self._show("PUT", meta, "/scale", body):
                apps.replace_namespaced_deployment_scale(meta.name, meta.namespace, body,
                                                         _request_timeout=REQUEST_TIMEOUT)
            did.insert(0, f"scaled {replicas}->{target.replicas}")
        if not did:
            return "unchanged"
        return ("would be " if self.dry_run else "") + "; ".join(did)

    def _show(self, verb: str, meta, sub: str, body: dict) -> bool:
        """Print the write in dry-run mode (and skip it); True when it should be sent."""
        if not self.dry_run:
            return True
        path = f"/apis/apps/v1/namespaces/{meta.namespace}/deployments/{meta.name}{sub}"
        print(json.dumps({"dryRun": True, "verb": verb, "path": path, "body": body}, sort_keys=True),
              file=self.out or sys.stdout)
        return False


def _invalid(target: Target) -> str:
    if target.replicas < 0:
        return f"replicas {target.replicas} < 0"
    if target.replicas > 0 and not target.accelerator:
        return f"{target.replicas} replicas without an accelerator"
    if target.max_batch < 0:
        return f"max batch {target.max_batch} < 0"
    return ""
