"""Parts of the Kubernetes room that need no API server: labels, the resource spec, status, holding rules."""

from __future__ import annotations

import pytest
from kube_helpers import example_static
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client

from inferno_mip.control.protocols import FleetObservation, ServerObservation
from inferno_mip.k8s.cycle import CycleResult, ServerResult, build_system
from inferno_mip.k8s.labels import read_deployment
from inferno_mip.k8s.resource import SpecError, configmap_sections, parse_spec, status_body


def _deployment(labels: dict, replicas=2, ready=1):
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name="d", namespace="ns", labels=labels),
        spec=client.V1DeploymentSpec(replicas=replicas, selector=client.V1LabelSelector(match_labels={"app": "d"}),
                                     template=client.V1PodTemplateSpec()),
        status=client.V1DeploymentStatus(ready_replicas=ready))


def test_labels_as_inferno_names_them():
    dep = read_deployment(_deployment({"inferno.server.name": "s", "inferno.server.model": "m",
                                       "inferno.server.allocation.accelerator": "A100",
                                       "inferno.server.allocation.maxbatchsize": "8",
                                       "inferno.server.load.rpm": "30", "inferno.server.load.intokens": "100",
                                       "inferno.server.load.outtokens": "bad"}))
    assert (dep.server, dep.model, dep.service_class, dep.accelerator, dep.max_batch) == ("s", "m", "Free", "A100", 8)
    assert (dep.desired, dep.ready, dep.match_labels) == (2, 1, {"app": "d"})
    assert dep.load.arrival_rate == pytest.approx(0.5) and dep.load.in_tokens == 100 and dep.load.out_tokens is None
    assert dep.problems == ("deployment ns/d: label inferno.server.load.outtokens='bad' is not a number, ignored",)
    assert "inferno.server.model missing" in read_deployment(_deployment({"inferno.server.name": "s"}))


def test_spec_errors_name_the_field():
    spec = parse_spec({"periodSeconds": 30, "solverOptions": {"timeLimit": 5, "saturationPolicy": "None"},
                       "dataFrom": [{"configMapName": "x"}]}, "optimizer ns/o")
    assert spec.solver_options == {"time_limit": 5, "saturation_policy": "None"}
    assert spec.target_namespace("ns") == "ns" and parse_spec({"namespace": "*"}, "o").target_namespace("ns") is None
    with pytest.raises(SpecError, match=r"optimizer ns/o: spec.periodSeconds: .*greater than 0"):
        parse_spec({"periodSeconds": 0}, "optimizer ns/o")
    with pytest.raises(SpecError, match=r"spec.solverOptions: .*unknown option 'heterogeneous'"):
        parse_spec({"solverOptions": {"heterogeneous": True}}, "o")
    with pytest.raises(SpecError, match=r"spec.colour: .*Extra inputs"):
        parse_spec({"colour": "red"}, "o")


def test_configmap_keys_are_inferno_file_names():
    sections = configmap_sections({"capacity-data.json": '{"count": []}', "system-data.yaml":
                                   "system:\n  acceleratorData: {accelerators: []}\n", "README": "ignored"}, "cm")
    assert sections == {"capacitydata": {"count": []}, "acceleratordata": {"accelerators": []}}
    with pytest.raises(SpecError, match="cm: key model-data.json: expected an object"):
        configmap_sections({"model-data.json": "[1, 2]"}, "cm")


def test_condition_transition_times_move_only_on_change():
    ok = CycleResult(0.0, "done", servers=(ServerResult("s", "ok", "fine", "unchanged"),), solve_status="optimal")
    held = CycleResult(0.0, "collect", "held: API server unreachable")
    first = status_body(ok, 1, None)
    for c in first["conditions"]:
        c["lastTransitionTime"] = "2000-01-01T00:00:00Z"
    second = status_body(held, 1, first)
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    assert times["Ready"] != "2000-01-01T00:00:00Z" and times["Collected"] != "2000-01-01T00:00:00Z"
    assert "allocation" not in second  # the last allocation is kept until a new one is computed
    assert {c["type"]: c["status"] for c in second["conditions"]} == {
        "Collected": "False", "Solved": "False", "Actuated": "False", "Ready": "False"}


LOADS = st.one_of(st.none(), st.floats(0.0, 5.0))


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(LOADS, st.integers(0, 6), st.sampled_from(["A100", "L4"])), min_size=1, max_size=6))
def test_servers_without_load_are_held_and_keep_their_capacity(servers):
    static = example_static()
    fleet = FleetObservation(0.0, {
        f"s{i}": ServerObservation(f"s{i}", "llama_13b", "Premium", acc, 32, replicas, 0, arrival_rate=rate,
                                   in_tokens=128.0, out_tokens=1024.0)
        for i, (rate, replicas, acc) in enumerate(servers)})
    system, held = build_system(static, fleet, "test")
    assert set(held) == {n for n, o in fleet.servers.items() if o.arrival_rate is None}
    assert {s.name for s in system.servers} == set(fleet.servers) - set(held)
    full = build_system(static, FleetObservation(0.0, {}), "test")[0].capacity
    per_replica = {"A100": 1, "L4": 2}  # multiplicity x accCount of llama_13b in the example data
    for kind, count in full.items():
        taken = sum(fleet.servers[n].replicas_ready * per_replica[kind] for n in held
                    if fleet.servers[n].accelerator == kind)
        assert system.capacity[kind] == max(0, count - taken)


class _Fleet:
    """A collector over a fixed observation (or one that fails)."""

    def __init__(self, fleet=None, error=None):
        self.fleet, self.error = fleet, error

    def collect(self):
        if self.error:
            raise self.error
        return self.fleet


class _Recorder:
    def __init__(self):
        self.calls = []

    def actuate(self, targets):
        self.calls.append(dict(targets))
        return {name: "recorded" for name in targets}


def test_cycle_holds_when_a_stage_fails():
    from inferno_mip.control.protocols import CollectError
    from inferno_mip.k8s.cycle import run_cycle

    static = example_static()
    fleet = FleetObservation(0.0, {"s": ServerObservation("s", "llama_13b", "Premium", "A100", 32, 1,
                                                          arrival_rate=1.0, in_tokens=128.0, out_tokens=1024.0)})
    recorder = _Recorder()
    down = run_cycle(_Fleet(error=CollectError("list deployments: API server unreachable")), recorder, static)
    assert (down.phase, down.message) == ("collect", "held: list deployments: API server unreachable")
    bad_data = run_cycle(_Fleet(fleet), recorder, {**static, "acceleratordata": {"accelerators": [{"name": 3}]}})
    assert bad_data.phase == "data" and "accelerators" in bad_data.message
    bad_option = run_cycle(_Fleet(fleet), recorder, static, options={"time_limit": "soon"})
    assert bad_option.phase == "solve" and bad_option.message.startswith("held: solve failed:")
    assert recorder.calls == []  # nothing actuated
    done = run_cycle(_Fleet(fleet), recorder, static)
    assert done.ok and recorder.calls == [done.targets()] and done.servers[0].action == "recorded"


def test_operator_command_bad_kubeconfig_is_one_error_line(tmp_path, capsys):
    from inferno_mip.cli import main

    bad = tmp_path / "kubeconfig"
    bad.write_text("clusters: [\n")
    assert main(["operator", "--kubeconfig", str(bad), "--once"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: not YAML")
    bad.write_text("just a string\n")
    assert main(["operator", "--kubeconfig", str(bad), "--once"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: not a kubeconfig")
