"""Collector, actuator and cycle against a real kube-apiserver (see conftest.py)."""

from __future__ import annotations

import io
import json
import os
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kube_helpers import TcpProxy, example_static, managed_deployment

from inferno_mip import solve
from inferno_mip.control.protocols import CollectError, Target
from inferno_mip.io import parse_system
from inferno_mip.k8s.actuator import KubeActuator
from inferno_mip.k8s.collector import KubeCollector
from inferno_mip.k8s.cycle import run_cycle

pytestmark = pytest.mark.kube


def _apps(api):
    from kubernetes import client

    return client.AppsV1Api(api)


def _state(api, namespace: str, name: str) -> tuple[int, str, str, str]:
    d = _apps(api).read_namespaced_deployment(name, namespace)
    labels = d.metadata.labels
    return (d.spec.replicas, labels["inferno.server.allocation.accelerator"],
            labels["inferno.server.allocation.maxbatchsize"], d.metadata.resource_version)


def _fleet(api, namespace: str) -> None:
    """Two servers whose allocation must change: llama 1 replica (needs more), granite on L4 (A100 is cheaper)."""
    managed_deployment(api, namespace, "llama", rpm=60)
    managed_deployment(api, namespace, "granite", model="granite_13b", service_class="Free", accelerator="L4",
                       max_batch=18, rpm=120, out_tokens=512)


def _expected(static: dict, collector: KubeCollector) -> dict[str, Target]:
    """What an independent solve of the same data allocates (the servers as inferno's JSON would give them)."""
    fleet = collector.collect()
    servers = [{"name": o.name, "class": o.service_class, "model": o.model,
                "currentAlloc": {"accelerator": o.accelerator, "numReplicas": o.replicas_ready + o.replicas_starting,
                                 "maxBatch": o.max_batch, "load": {"arrivalRate": o.arrival_rate * 60,
                                                                   "avgInTokens": o.in_tokens,
                                                                   "avgOutTokens": o.out_tokens}}}
               for o in fleet.servers.values()]
    solution = solve(parse_system({"system": {**static, "serverData": {"servers": servers}}}))
    return {a.name: Target(a.accelerator, a.replicas, a.max_batch) for a in solution.allocations}


def test_discovery_by_labels_and_namespace(cluster):
    api = cluster.api()
    ns, other = cluster.namespace(), cluster.namespace()
    managed_deployment(api, ns, "llama", rpm=90, replicas=2)
    managed_deployment(api, ns, "free-granite", model="granite_13b", service_class=None, rpm=None)
    managed_deployment(api, ns, "nameless", extra_labels={"inferno.server.name": ""})
    managed_deployment(api, ns, "unmanaged", extra_labels={"inferno.server.managed": "false"})
    managed_deployment(api, other, "elsewhere", extra_labels={"fleet": ns})
    managed_deployment(api, ns, "old-labels", rpm=30, in_tokens=None, out_tokens=None,
                       extra_labels={"inferno.server.load.numtokens": "512"})
    _pod(api, ns, "llama-a", "llama", started_seconds_ago=300)
    _pod(api, ns, "llama-b", "llama", started_seconds_ago=5)

    fleet = KubeCollector(api, ns, startup_delay=60).collect()
    assert sorted(fleet.servers) == ["free-granite", "llama", "old-labels"]
    llama = fleet.servers["llama"]
    assert (llama.model, llama.service_class, llama.accelerator, llama.max_batch) == ("llama_13b", "Premium", "A100", 64)
    assert llama.arrival_rate == pytest.approx(90 / 60) and (llama.in_tokens, llama.out_tokens) == (128, 1024)
    # one pod older than the start-up delay serves; the young one is still starting
    assert (llama.replicas_ready, llama.replicas_starting) == (1, 1)
    granite = fleet.servers["free-granite"]
    assert granite.service_class == "Free" and granite.arrival_rate is None
    # no pods yet (no controller-manager): the desired replica is starting
    assert (granite.replicas_ready, granite.replicas_starting) == (0, 1)
    assert (fleet.servers["old-labels"].in_tokens, fleet.servers["old-labels"].out_tokens) == (0.0, 512.0)
    assert any("nameless" in p and "inferno.server.name missing" in p for p in fleet.problems)
    # without the delay both pods serve; all namespaces with a selector finds the other namespace's server
    assert KubeCollector(api, ns).collect().servers["llama"].replicas_ready == 2
    everywhere = KubeCollector(api, None, selector=f"fleet={ns}").collect()
    assert sorted(everywhere.servers) == ["elsewhere"]


def _pod(api, namespace: str, name: str, app: str, started_seconds_ago: float) -> None:
    from kubernetes import client

    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, {"metadata": {"name": name, "labels": {"app": app}},
                                           "spec": {"automountServiceAccountToken": False,
                                                    "containers": [{"name": "server", "image": "vllm:none"}]}})
    started = (datetime.now(timezone.utc) - timedelta(seconds=started_seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    core.patch_namespaced_pod_status(name, namespace, {"status": {
        "phase": "Running", "startTime": started,
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}]}})


def test_cycle_scales_and_relabels_then_is_idempotent(cluster, namespace):
    api, static = cluster.api(), example_static()
    _fleet(api, namespace)
    collector = KubeCollector(api, namespace)
    expected = _expected(static, collector)
    before = {n: _state(api, namespace, n) for n in ("llama", "granite")}
    assert any(before[n][:3] != (t.replicas, t.accelerator, str(t.max_batch)) for n, t in expected.items())

    result = run_cycle(collector, KubeActuator(api, namespace, system=parse_system(
        {"system": {**static, "serverData": {"servers": []}}})), static)
    assert result.ok, result.message
    assert result.targets() == expected
    after = {n: _state(api, namespace, n) for n in ("llama", "granite")}
    for name, target in expected.items():
        assert after[name][:3] == (target.replicas, target.accelerator, str(target.max_batch))
        action = {s.name: s.action for s in result.servers}[name]
        assert action != "unchanged" if after[name][:3] != before[name][:3] else action == "unchanged"

    again = run_cycle(collector, KubeActuator(api, namespace), static)
    assert again.ok and again.targets() == expected
    assert {s.action for s in again.servers} == {"unchanged"}
    assert {n: _state(api, namespace, n) for n in ("llama", "granite")} == after  # not even a resourceVersion moved


def test_dry_run_prints_patches_and_changes_nothing(cluster, namespace):
    api = cluster.api()
    _fleet(api, namespace)
    before = _state(api, namespace, "granite")
    out = io.StringIO()
    done = KubeActuator(api, namespace, dry_run=True, out=out).actuate({"granite": Target("A100", 3, 64)})
    assert done["granite"].startswith("would be scaled 1->3")
    writes = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [w["verb"] for w in writes] == ["PATCH", "PUT"]
    assert writes[0]["body"]["metadata"]["labels"] == {"inferno.server.allocation.accelerator": "A100",
                                                       "inferno.server.allocation.maxbatchsize": "64"}
    assert writes[1]["path"].endswith(f"/namespaces/{namespace}/deployments/granite/scale")
    assert writes[1]["body"]["spec"] == {"replicas": 3}
    assert _state(api, namespace, "granite") == before


def test_conflicting_write_is_retried(cluster, namespace):
    api = cluster.api()
    _fleet(api, namespace)
    apps = _apps(api)

    class Interfered(KubeActuator):
        """Another writer changes the Deployment between this actuator's read and its write, once."""
        interfered = 0

        def _write(self, apps_api, current, target):
            if not self.interfered:
                self.interfered += 1
                apps.patch_namespaced_deployment(current.metadata.name, namespace,
                                                 {"metadata": {"labels": {"touched": "yes"}}})
            return super()._write(apps_api, current, target)

    actuator = Interfered(api, namespace)
    done = actuator.actuate({"llama": Target("L4", 2, 16)})
    assert actuator.interfered == 1
    assert done["llama"].startswith("scaled 1->2")
    d = apps.read_namespaced_deployment("llama", namespace)
    assert d.spec.replicas == 2 and d.metadata.labels["touched"] == "yes"
    assert d.metadata.labels["inferno.server.allocation.accelerator"] == "L4"


def test_deployment_deleted_mid_cycle(cluster, namespace):
    api, static = cluster.api(), example_static()
    _fleet(api, namespace)

    class DeletingCollector(KubeCollector):
        def collect(self):
            fleet = super().collect()
            _apps(self.api).delete_namespaced_deployment("llama", namespace)
            return fleet

    result = run_cycle(DeletingCollector(api, namespace), KubeActuator(api, namespace), static)
    actions = {s.name: s.action for s in result.servers}
    assert actions["llama"].startswith("gone:")
    target = result.targets()["granite"]
    assert _state(api, namespace, "granite")[:3] == (target.replicas, target.accelerator, str(target.max_batch))


def test_capacity_guard_holds_scale_ups_beyond_capacity(cluster, namespace):
    api, static = cluster.api(), example_static()
    _fleet(api, namespace)
    system = parse_system({"system": {**static, "serverData": {"servers": []}}})
    cap = system.capacity["A100"]
    done = KubeActuator(api, namespace, system=system).actuate(
        {"granite": Target("L4", 0, 18), "llama": Target("A100", cap + 1, 64)})
    assert done["granite"].startswith("scaled 1->0")
    assert done["llama"].startswith("held:") and f"capacity {cap}" in done["llama"]
    assert _state(api, namespace, "llama")[0] == 1
    # within capacity (counting every managed Deployment) it is applied
    done = KubeActuator(api, namespace, system=system).actuate({"llama": Target("A100", cap, 64)})
    assert done["llama"] == f"scaled 1->{cap}"


def test_missing_load_data_holds_the_server(cluster, namespace):
    api, static = cluster.api(), example_static()
    managed_deployment(api, namespace, "blind", rpm=None, replicas=3)
    managed_deployment(api, namespace, "seen", rpm=60)
    result = run_cycle(KubeCollector(api, namespace), KubeActuator(api, namespace), static)
    blind = {s.name: s for s in result.servers}["blind"]
    assert blind.status == "held" and "arrival rate" in blind.reason and blind.target is None
    assert _state(api, namespace, "blind")[0] == 3  # never zeroed
    assert "seen" in result.targets()


def test_api_server_down_holds_and_recovers(cluster, namespace, tmp_path):
    from inferno_mip.k8s.kubeapi import api_client

    static = example_static()
    _fleet(cluster.api(), namespace)
    proxy = TcpProxy(cluster.port)
    api = api_client(proxy.kubeconfig(cluster, tmp_path))
    collector, actuator = KubeCollector(api, namespace), KubeActuator(api, namespace)
    before = {n: _state(cluster.api(), namespace, n) for n in ("llama", "granite")}

    proxy.down()
    down = run_cycle(collector, actuator, static)
    assert down.phase == "collect" and "unreachable" in down.message
    with pytest.raises(CollectError):
        collector.collect()

    class Outage(KubeCollector):  # collect works, then the API server goes away before actuation
        def collect(self):
            fleet = super().collect()
            proxy.down()
            return fleet

    proxy.up()
    mid = run_cycle(Outage(api, namespace), actuator, static)
    assert mid.phase == "actuate" and "unreachable" in mid.message
    assert {n: _state(cluster.api(), namespace, n) for n in ("llama", "granite")} == before  # held

    proxy.up()
    recovered = run_cycle(collector, actuator, static)
    assert recovered.ok, recovered.message
    for name, target in recovered.targets().items():
        assert _state(cluster.api(), namespace, name)[:3] == (target.replicas, target.accelerator,
                                                               str(target.max_batch))
    proxy.down()


def test_rbac_denial_is_reported_clearly(cluster, namespace):
    from kubernetes import client

    admin = cluster.api()
    _fleet(admin, namespace)
    with pytest.raises(CollectError) as denied:
        KubeCollector(cluster.api("nobody"), namespace).collect()
    message = str(denied.value)
    assert "forbidden" in message and "deployments" in message and namespace in message and "Role" in message

    # may read but not write: every server reports the denial, nothing changes
    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "reader"}, "rules": [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "reader"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                    "name": "reader"},
        "subjects": [{"kind": "User", "name": "inferno-nobody", "apiGroup": "rbac.authorization.k8s.io"}]})
    result = run_cycle(KubeCollector(cluster.api("nobody"), namespace), KubeActuator(cluster.api("nobody"), namespace),
                       example_static())
    actions = {s.name: s.action for s in result.servers if s.target is not None}
    assert actions and all(a.startswith("failed:") and "forbidden" in a for a in actions.values())
    assert any("list pods" in p and "forbidden" in p for p in result.problems)  # fell back to the ready count
    assert _state(admin, namespace, "llama")[0] == 1


def test_prometheus_unreachable_falls_back_to_load_labels(cluster, namespace):
    from kube_helpers import free_ports

    from inferno_mip.k8s.prometheus import PrometheusJoin, PrometheusSettings

    api = cluster.api()
    managed_deployment(api, namespace, "llama", rpm=90)
    join = PrometheusJoin(PrometheusSettings(address=f"http://127.0.0.1:{free_ports(1)}", timeout=1.0))
    try:
        fleet = KubeCollector(api, namespace, prometheus=join).collect()
    finally:
        join.close()
    llama = fleet.servers["llama"]
    assert llama.arrival_rate == pytest.approx(1.5) and (llama.in_tokens, llama.out_tokens) == (128, 1024)
    assert llama.itl is None and llama.ttft is None
    assert any(p.startswith(f"prometheus for {namespace}/llama:") and "using the load labels" in p
               for p in fleet.problems)


@pytest.fixture(scope="module")
def vllm_fleet(cluster, tmp_path_factory):
    """A namespace with two managed Deployments, a simulated vLLM exporter for one ("llama", 2 pods) and a real
    Prometheus scraping it: (namespace, exporter, its operating point, Prometheus URL)."""
    from kube_helpers import PROMETHEUS, RunningPrometheus

    from inferno_mip.tuner.observers.exporter import OperatingPoint, VllmExporter

    if PROMETHEUS is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but the prometheus binary is missing (apt-get install -y prometheus)")
        pytest.skip("prometheus binary not installed (apt-get install -y prometheus)")
    api, namespace = cluster.api(), cluster.namespace()
    managed_deployment(api, namespace, "llama", rpm=5, in_tokens=1, out_tokens=1)  # labels differ from the truth
    managed_deployment(api, namespace, "quiet", rpm=30)                            # exports nothing
    point = OperatingPoint("llama", rpm=60, in_tokens=256, out_tokens=512, max_batch=64, replicas=2)
    exporter = VllmExporter((12.0, 0.04, 6e-5), [point], namespace=namespace)
    prometheus = RunningPrometheus(tmp_path_factory.mktemp("prometheus"), exporter.start(0))
    try:
        yield namespace, exporter, point, prometheus.url
    finally:
        prometheus.stop()
        exporter.stop()


def _join(url: str):
    from inferno_mip.k8s.prometheus import PrometheusJoin, PrometheusSettings

    return PrometheusJoin(PrometheusSettings(address=url, window="5s"))  # rate() needs a full window


@pytest.mark.slow
def test_prometheus_join_reads_vllm_metrics_per_deployment(cluster, vllm_fleet):
    namespace, exporter, point, url = vllm_fleet
    join = _join(url)
    try:
        fleet = KubeCollector(cluster.api(), namespace, prometheus=join).collect()
    finally:
        join.close()
    truth = exporter.metrics(point)
    llama = fleet.servers["llama"]
    rel = 1e-6
    assert llama.arrival_rate == pytest.approx(2 * 60 / 60, rel=0.05) == llama.throughput  # scrape jitter
    assert (llama.in_tokens, llama.out_tokens) == (pytest.approx(256, rel=rel), pytest.approx(512, rel=rel))
    assert (llama.itl, llama.ttft) == (pytest.approx(truth.itl, rel=rel), pytest.approx(truth.ttft, rel=rel))
    assert llama.engine_ttft == pytest.approx(truth.ttft, rel=rel)  # queue + prefill: the exporter has no API delay
    assert llama.running == pytest.approx(2 * truth.num_in_service, rel=rel)
    quiet = fleet.servers["quiet"]
    assert quiet.arrival_rate == pytest.approx(0.5) and quiet.itl is None  # no series: the labels
    assert not fleet.problems


@pytest.mark.slow
def test_the_control_loop_drives_deployments_through_the_kube_collector_and_actuator(cluster, vllm_fleet):
    """inferno_mip.control's loop (forecast, stabilise, record) with KubeCollector and KubeActuator as its stages."""
    from inferno_mip.control.loop import ControlLoop, LoopConfig

    namespace, _, _, url = vllm_fleet
    api, static = cluster.api(), example_static()
    servers = [{"name": n, "class": "Premium", "model": "llama_13b"} for n in ("llama", "quiet")]
    system = parse_system({"system": {**static, "serverData": {"servers": servers}}})
    join = _join(url)
    try:
        loop = ControlLoop(system, KubeCollector(api, namespace, prometheus=join),
                           KubeActuator(api, namespace, system=system), LoopConfig(forecast="last"))
        record = loop.cycle()
    finally:
        join.close()
    by_name = {s["name"]: s for s in record["servers"]}
    llama, quiet = by_name["llama"], by_name["quiet"]
    assert quiet["fault"].startswith("missing metrics") and _state(api, namespace, "quiet")[0] == 1  # held
    assert llama["fault"] == "" and llama["recommended"] is not None, llama
    assert _state(api, namespace, "llama")[:3] == (llama["replicas"], llama["accelerator"], str(llama["maxBatch"]))
    assert llama["replicas"] != 1 and llama["action"].startswith("scaled 1->")

def test_in_cluster_config_from_a_service_account_folder(cluster, namespace, tmp_path, monkeypatch):
    from kubernetes import client

    from inferno_mip.k8s.kubeapi import KubeConfigError, api_client

    managed_deployment(cluster.api(), namespace, "llama")
    (tmp_path / "token").write_text("admin-token")
    (tmp_path / "ca.crt").write_bytes((cluster.folder / "apiserver.crt").read_bytes())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(cluster.port))
    api = api_client(service_account_dir=str(tmp_path))  # in a pod, with no kubeconfig named
    assert [d.metadata.name for d in client.AppsV1Api(api).list_namespaced_deployment(namespace).items] == ["llama"]
    with pytest.raises(KubeConfigError, match=r"in-cluster service account \(.*absent\)"):
        api_client(in_cluster=True, service_account_dir=str(tmp_path / "absent"))


SERVERS = ("a", "b", "c")
STATES = st.tuples(st.sampled_from(["A100", "L4"]), st.integers(0, 6))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.tuples(STATES, STATES, STATES),
       targets=st.dictionaries(st.sampled_from(SERVERS), STATES, min_size=1, max_size=3))
def test_actuation_never_takes_a_type_above_capacity(cluster, shared_fleet, before, targets):
    """Whatever the start and the targets: per type, units after <= max(capacity, units before); a target is
    either applied exactly or held (and then its Deployment is untouched)."""
    api, namespace = cluster.api(), shared_fleet
    apps = _apps(api)
    for name, (acc, replicas) in zip(SERVERS, before):
        apps.patch_namespaced_deployment(name, namespace, {"metadata": {"labels": {
            "inferno.server.allocation.accelerator": acc}}, "spec": {"replicas": replicas}})
    system = parse_system({"system": {**example_static(), "serverData": {"servers": []}}})
    per_replica = {"A100": 1, "L4": 2}  # llama_13b in the example data

    def units(states):
        used = {"A100": 0, "L4": 0}
        for acc, replicas in states.values():
            used[acc] += per_replica[acc] * replicas
        return used

    start = {n: (acc, r) for n, (acc, r) in zip(SERVERS, before)}
    done = KubeActuator(api, namespace, system=system).actuate(
        {n: Target(acc, r, 32) for n, (acc, r) in targets.items()})
    after = {n: _state(api, namespace, n) for n in SERVERS}
    now = {n: (s[1], s[0]) for n, s in after.items()}
    for kind, count in units(now).items():
        assert count <= max(system.capacity[kind], units(start)[kind]), (kind, start, targets, done)
    for name, (acc, replicas) in targets.items():
        if done[name].startswith("held:"):
            assert now[name] == start[name]
        else:
            assert now[name] == (acc, replicas), done[name]


@pytest.fixture(scope="module")
def shared_fleet(cluster):
    namespace = cluster.namespace()
    for name in SERVERS:
        managed_deployment(cluster.api(), namespace, name)
    return namespace
