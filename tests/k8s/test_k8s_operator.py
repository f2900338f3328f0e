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

        # a spec change (only llama's A100s left; llama cannot meet its SLO on L4) moves the generation: solved
        # again, granite moves to L4
        llama_a100 = first["allocation"]["llama"]["replicas"]
        _objects(api).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fleet", {"spec": {"data": {
            "capacityData": {"count": [{"type": "L4", "count": 64}, {"type": "A100", "count": llama_a100}]}}}})
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
        "solverOptions": {"speed": None}, "dataFrom": [{"configMapName": "absent"}]}})  # null: merge-patch delete
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


def test_deploy_manifests_are_accepted_by_the_api_server(cluster):
    """Every object of deploy/ (the CRD is installed by the fixture) is valid for a v1.20 API server."""
    from kubernetes import client, utils

    api = cluster.api()
    client.CoreV1Api(api).create_namespace({"metadata": {"name": "inferno"}})
    client.CoreV1Api(api).create_namespaced_service_account("inferno", {"metadata": {"name": "default"}})
    for name in ("rbac.yaml", "example.yaml", "operator.yaml"):
        for doc in yaml.safe_load_all((ROOT / "deploy" / name).read_text()):
            if doc["kind"] == "Optimizer":  # the client's create_from_yaml knows only built-in kinds
                _objects(api).create_namespaced_custom_object(GROUP, VERSION, "inferno", PLURAL, doc)
            else:
                utils.create_from_dict(api, doc)
    optimizer = _objects(api).get_namespaced_custom_object(GROUP, VERSION, "inferno", PLURAL, "fleet")
    spec = optimizer["spec"]
    assert spec["dataFrom"] == [{"configMapName": "inferno-static-data"}] and spec["periodSeconds"] == 60
    deployment = client.AppsV1Api(api).read_namespaced_deployment("inferno-mip-operator", "inferno")
    assert deployment.spec.template.spec.service_account_name == "inferno-mip-operator"


@pytest.mark.slow  # several seconds of reconnection back-off
def test_operator_loop_holds_while_the_api_server_is_down_and_recovers(cluster, namespace, tmp_path):
    from kubernetes import client
    from kube_helpers import TcpProxy

    from inferno_mip.k8s.kubeapi import api_client

    admin = cluster.api()
    _setup(admin, namespace)
    proxy = TcpProxy(cluster.port)
    stop = threading.Event()
    operator = Operator(api_client(proxy.kubeconfig(cluster, tmp_path)), namespace, watch_seconds=2)
    thread = threading.Thread(target=operator.run, args=(stop,), daemon=True)
    thread.start()
    try:
        first = _wait(lambda: (s := _status(admin, namespace)).get("observedGeneration") == 1 and s, "first status")
        before = first["allocation"]["llama"]["replicas"]
        proxy.down()
        # while the operator cannot reach the API server, the load changes; nothing can be acted on
        client.AppsV1Api(admin).patch_namespaced_deployment("llama", namespace, {"metadata": {"labels": {
            "inferno.server.load.rpm": "10"}}})
        time.sleep(1.0)
        assert _replicas(admin, namespace)["llama"][0] == before
        proxy.up()  # the watches reconnect, list again, see the change and reconcile
        after = _wait(lambda: (s := _status(admin, namespace))["allocation"]["llama"]["replicas"] != before and s,
                      "a reconcile after the API server came back")
        assert thread.is_alive()
        assert _replicas(admin, namespace)["llama"][0] == after["allocation"]["llama"]["replicas"]
    finally:
        stop.set()
        thread.join(timeout=30)
        proxy.down()
