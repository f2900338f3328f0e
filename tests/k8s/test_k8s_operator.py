"""The Optimizer reconciler and `inferno-mip operator` against a real kube-apiserver (see conftest.py)."""

from __future__ import annotations

import copy
import json
import threading
import time

import pytest
import yaml
from kube_helpers import ROOT, example_docs, managed_deployment

from inferno_mip.cli import main
from inferno_mip.k8s.operator import Operator
from inferno_mip.k8s.resource import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.kube


def _objects(api):
    from kubernetes import client

    return client.CustomObjectsApi(api)


def _setup(api, namespace: str, **spec) -> dict:
    """The example's ConfigMap and Optimizer in `namespace`, plus two managed Deployments."""
    from kubernetes import client

    docs = example_docs()
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    cm["metadata"]["namespace"] = namespace
    client.CoreV1Api(api).create_namespaced_config_map(namespace, cm)
    opt = copy.deepcopy(next(d for d in docs if d["kind"] == "Optimizer"))
    opt["metadata"]["namespace"] = namespace
    opt["spec"].update({"periodSeconds": 3600, "minIntervalSeconds": 0, "startupDelaySeconds": 0}, **spec)
    managed_deployment(api, namespace, "llama", rpm=60)
    managed_deployment(api, namespace, "granite", model="granite_13b", service_class="Free", accelerator="L4",
                       max_batch=18, rpm=120, out_tokens=512)
    return _objects(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, opt)


def _status(api, namespace: str) -> dict:
    return _objects(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fleet").get("status") or {}


def _wait(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _replicas(api, namespace: str) -> dict[str, tuple[int, str]]:
    from kubernetes import client

    deps = client.AppsV1Api(api).list_namespaced_deployment(namespace).items
    return {d.metadata.name: (d.spec.replicas, d.metadata.labels["inferno.server.allocation.accelerator"])
            for d in deps}


def _condition(status: dict, kind: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def test_reconciler_writes_status_on_resource_and_deployment_changes(cluster, namespace):
    api = cluster.api()
    _setup(api, namespace)
    stop = threading.Event()
    operator = Operator(api, namespace, watch_seconds=2)
    thread = threading.Thread(target=operator.run, args=(stop,), daemon=True)
    thread.start()
    try:
        first = _wait(lambda: (s := _status(api, namespace)).get("observedGeneration") == 1 and s, "first status")
        assert _condition(first, "Ready")["status"] == "True", first
        assert {s["name"] for s in first["servers"]} == {"llama", "granite"}
        assert set(first["timings"]) >= {"collect", "solve", "actuate", "total"}
        state = _replicas(api, namespace)
        assert {n: (a["replicas"], a["accelerator"]) for n, a in first["allocation"].items()} == state

        # a spec change (A100s only for llama) moves the generation: solved again, granite moves to L4
        _objects(api).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fleet", {"spec": {"data": {
            "capacityData": {"count": [{"type": "L4", "count": 64}, {"type": "A100", "count": 4}]}}}})
        second = _wait(lambda: (s := _status(api, namespace)).get("observedGeneration") == 2 and s, "second status")
        assert _condition(second, "Ready")["status"] == "True", second
        assert {n: (a["replicas"], a["accelerator"]) for n, a in second["allocation"].items()} == _replicas(
            api, namespace)
        assert second["allocation"]["granite"]["accelerator"] == "L4" != first["allocation"]["granite"]["accelerator"]

        # a managed Deployment's load changes: reconciled without a spec change
        from kubernetes import client

        before = second["allocation"]["llama"]["replicas"]
        client.AppsV1Api(api).patch_namespaced_deployment("llama", namespace, {"metadata": {"labels": {
            "inferno.server.load.rpm": "10"}}})
        third = _wait(lambda: (s := _status(api, namespace))["allocation"]["llama"]["replicas"] != before and s,
                      "a reconcile after the Deployment changed")
        assert third["observedGeneration"] == 2
        assert _replicas(api, namespace)["llama"][0] == third["allocation"]["llama"]["replicas"]
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_least_privilege_role_is_enough(cluster, namespace):
    from kubernetes import client

    admin = cluster.api()
    _setup(admin, namespace)
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "Role")
    role["metadata"]["namespace"] = namespace
    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(namespace, role)
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "operator"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                      "name": role["metadata"]["name"]},
        "subjects": [{"kind": "User", "name": "inferno-operator", "apiGroup": "rbac.authorization.k8s.io"}]})
    operator_api = cluster.api("operator")
    result = Operator(operator_api, namespace).reconcile(namespace, "fleet")
    assert result is not None and result.ok, result and result.message
    assert not result.problems
    status = _status(admin, namespace)
    assert _condition(status, "Ready")["status"] == "True"
    assert {n: (a["replicas"], a["accelerator"]) for n, a in status["allocation"].items()} == _replicas(admin,
                                                                                                       namespace)


def test_invalid_spec_and_missing_configmap_are_reported_in_status(cluster, namespace):
    api = cluster.api()
    _setup(api, namespace, solverOptions={"timeLimit": 5, "speed": "fast"})
    assert Operator(api, namespace).reconcile(namespace, "fleet") is None
    status = _status(api, namespace)
    ready = _condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.solverOptions" in ready["message"] and "'speed'" in ready["message"]

    _objects(api).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fleet", {"spec": {
        "solverOptions": {"timeLimit": 5}, "dataFrom": [{"configMapName": "absent"}]}})
    assert Operator(api, namespace).reconcile(namespace, "fleet") is None
    ready = _condition(_status(api, namespace), "Ready")
    assert ready["reason"] == "InvalidSpec" and f"configmap {namespace}/absent" in ready["message"]
    assert "not found" in ready["message"]
    assert _replicas(api, namespace) == {"llama": (1, "A100"), "granite": (1, "L4")}  # nothing actuated


def test_operator_command_once_dry_run(cluster, namespace, capsys):
    api = cluster.api()
    _setup(api, namespace)
    code = main(["operator", "--kubeconfig", cluster.kubeconfig(), "--namespace", namespace, "--once", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    patches = [json.loads(line) for line in out.splitlines() if line.startswith('{"body"')]
    report = json.loads(out[out.index("{\n"):])
    servers = report[f"{namespace}/fleet"]["servers"]
    assert set(servers) == {"llama", "granite"}
    assert patches and all(p["dryRun"] for p in patches)
    assert any(s["action"].startswith("would be") for s in servers.values())
    assert _replicas(api, namespace) == {"llama": (1, "A100"), "granite": (1, "L4")}  # dry run: unchanged
    # the status still reports what would be done
    assert _condition(_status(api, namespace), "Ready")["status"] == "True"
