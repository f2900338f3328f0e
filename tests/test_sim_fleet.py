"""The fleet: routing, start-up, drain, allocation changes, windows, perf-data generations, determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import inferno_mip
from inferno_mip.sim import Fleet, LengthDist, ReplicaConfig, SimulationError, Workload
from inferno_mip.sim.fleet import perf_config
from inferno_mip.sim.replica import Replica, Request
from inferno_mip.spec import CurrentAllocation, Load, PerfData, Server, System

ROOT = Path(__file__).resolve().parent.parent
SMALL = str(ROOT / "scenarios" / "inferno-small")

PERF = (PerfData(model="m", accelerator="A", generation="G3", alpha=8.0, beta=0.016, gamma=0.0005),
        PerfData(model="m", accelerator="B", generation="G3", alpha=4.0, beta=0.008, gamma=0.00025))


def system(rate=4.0, replicas=2, accelerator="A", batch=16):
    servers = (Server(name="s1", model="m", load=Load(arrival_rate=rate, avg_in_tokens=200, avg_out_tokens=200),
                      current=CurrentAllocation(accelerator=accelerator, num_replicas=replicas, max_batch=batch)),
               Server(name="s2", model="m", load=Load(arrival_rate=1.0, avg_in_tokens=100, avg_out_tokens=50),
                      current=CurrentAllocation(accelerator="B", num_replicas=1, max_batch=8)))
    return System(perf=PERF, servers=servers)


def workload(rate=4.0):
    return Workload.constant(rate, LengthDist.fixed(200), LengthDist.geometric(200), seed=1)


def test_window_counts_are_consistent_and_match_the_offered_load():
    fleet = Fleet.from_system(system(), workload(), startup_delay=30.0)
    fleet.advance(600.0)
    w = fleet.window(100.0)
    s1 = w["s1"]
    assert s1.offered_rate == pytest.approx(4.0, rel=0.06)
    assert s1.completed_rate == pytest.approx(s1.offered_rate, rel=0.05)
    assert s1.rejected == 0 and s1.replicas_ready == 2 and s1.replicas_starting == 0
    assert s1.accelerator == "A" and s1.max_batch == 16
    assert set(s1.per_replica) == {"s1/r1", "s1/r2"}
    assert sum(r["completed"] for r in s1.per_replica.values()) == s1.completed
    assert sum(r["running_mean"] for r in s1.per_replica.values()) == pytest.approx(s1.running_mean)
    assert s1.itl_p95 >= s1.itl_mean > 0 and s1.ttft_p95 >= s1.ttft_mean > 0
    assert s1.in_tokens_mean == 200 and s1.in_tokens_cv == 0
    assert s1.out_tokens_cv == pytest.approx(1.0, abs=0.1)
    # Little's law per server: requests held = completion rate x response time.
    done = s1.sample
    resp = done.done_ttft + np.nan_to_num(done.done_itl) * (done.done_out - 1)
    assert s1.running_mean + s1.waiting_mean == pytest.approx(s1.completed_rate * resp.mean(), rel=0.08)
    # s2 runs at its scenario load (no '*' in this workload would apply; here '*' covers it).
    assert w["s2"].offered_rate == pytest.approx(4.0, rel=0.1)


def test_servers_outside_the_workload_run_at_their_scenario_load():
    w = Workload.from_dict({"servers": {"s1": {"rate": {"phases": [{"for": 10, "rpm": 120}]}}}})
    fleet = Fleet.from_system(system(), w)
    fleet.advance(1200.0)
    win = fleet.window(0.0)
    assert win["s1"].offered_rate == pytest.approx(2.0, rel=0.08)
    assert win["s2"].offered_rate == pytest.approx(1.0, rel=0.1)
    assert win["s2"].in_tokens_mean == 100 and win["s2"].out_tokens_mean == 50


def test_jsq_balances_and_round_robin_alternates():
    for routing in ("jsq", "round-robin"):
        fleet = Fleet.from_system(system(replicas=3), workload(), routing=routing)
        fleet.advance(600.0)
        per = fleet.window(0.0)["s1"].per_replica
        offered = [r["offered_rate"] * 600 for r in per.values()]
        total = sum(offered)
        if routing == "round-robin":
            assert max(offered) - min(offered) <= 1
        else:
            assert max(offered) / total < 0.38 and min(offered) / total > 0.29


def test_jsq_beats_round_robin_on_ttft_with_variable_lengths():
    res = {}
    for routing in ("jsq", "round-robin"):
        fleet = Fleet.from_system(system(replicas=3, batch=4), workload(rate=4.5), routing=routing)
        fleet.advance(600.0)
        res[routing] = fleet.window(100.0)["s1"].ttft_mean
    assert res["jsq"] < res["round-robin"]


def test_scale_up_waits_for_start_up_and_scale_down_drains_without_loss():
    fleet = Fleet.from_system(system(replicas=1, batch=8), workload(rate=1.5), startup_delay=60.0)
    fleet.advance(300.0)
    assert fleet.set_allocation("s1", "A", 3, 8) == "scaled 1->3"
    fleet.advance(330.0)
    w = fleet.window(300.0)["s1"]
    assert (w.replicas_ready, w.replicas_starting) == (1, 2)
    assert set(w.per_replica) == {"s1/r1"}  # starting replicas take no requests
    fleet.advance(600.0)
    w = fleet.window(400.0)["s1"]
    assert (w.replicas_ready, w.replicas_starting) == (3, 0)
    assert all(r["offered_rate"] > 0 for r in w.per_replica.values())
    assert fleet.set_allocation("s1", "A", 1, 8) == "scaled 3->1"
    held = {r.name: r.engine.in_system for r in fleet.servers["s1"].replicas}
    fleet.advance(900.0)
    w = fleet.window(600.0)["s1"]
    assert w.replicas_ready == 1 and w.rejected == 0
    drained = [n for n in held if n != "s1/r1"]
    for name in drained:  # no new requests after the drain, and the ones held were completed
        per = w.per_replica[name]
        assert per["offered_rate"] == 0 and per["completed"] == held[name]
    assert fleet.set_allocation("s1", "A", 1, 8) == "unchanged"


def test_accelerator_change_starts_new_before_draining_old():
    fleet = Fleet.from_system(system(replicas=2, batch=16), workload(rate=3.0), startup_delay=45.0)
    fleet.advance(200.0)
    note = fleet.set_allocation("s1", "B", 2, 32)
    assert note.startswith("moved 2x A batch 16 -> 2x B batch 32")
    fleet.advance(240.0)
    w = fleet.window(200.0)["s1"]
    assert (w.replicas_ready, w.replicas_starting) == (2, 2) and w.rejected == 0  # old still serving
    assert set(w.per_replica) == {"s1/r1", "s1/r2"}
    fleet.advance(500.0)
    w = fleet.window(260.0)["s1"]
    assert w.accelerator == "B" and w.max_batch == 32 and w.replicas_ready == 2 and w.rejected == 0
    assert w.per_replica["s1/r3"]["accelerator"] == "B" and w.per_replica["s1/r3"]["offered_rate"] > 0
    old = fleet.servers["s1"].replicas[:2]
    for r in old:  # took nothing after the new replicas were ready, and finished what it held
        assert r.engine.log.table("done")[:, 0].max() < 245.0 and r.engine.in_system == 0


def test_stopping_a_server_rejects_its_load():
    fleet = Fleet.from_system(system(), workload(rate=2.0))
    fleet.advance(100.0)
    assert fleet.set_allocation("s1", "A", 0, 0).startswith("stopped")
    fleet.advance(400.0)
    w = fleet.window(200.0)["s1"]
    assert w.replicas_ready == 0 and w.rejected == round(w.offered_rate * 200) and w.completed == 0


def test_within_slo_counts_requests_meeting_both_targets():
    fleet = Fleet.from_system(system(), workload())
    fleet.advance(300.0)
    w = fleet.window(0.0)["s1"]
    assert w.within_slo(1e9, 1e9) == 1.0
    assert w.within_slo(0.0, 0.0) == 1.0  # no targets
    itl = w.sample.done_itl * 1000
    frac = w.within_slo(float(np.nanmedian(itl)), 0.0)
    assert frac == pytest.approx(np.mean(~(itl > np.nanmedian(itl))))
    assert 0.0 < w.within_slo(w.itl_mean, w.ttft_mean) < 1.0


def test_same_seed_same_windows_whatever_the_advance_steps():
    def run(steps, seed=0):
        fleet = Fleet.from_system(system(), workload(), seed=seed)
        for t in steps:
            fleet.advance(t)
        return {k: (v.ttft_mean, v.itl_p95, v.completed, v.running_mean) for k, v in fleet.window(50.0).items()}
    one = run([400.0])
    assert one == run([7.5, 120.0, 120.0, 399.0, 400.0])
    assert one != run([400.0], seed=1)


def test_generation_g2_reproduces_its_own_decode_and_prefill_times():
    g2 = PerfData(model="m", accelerator="X", generation="G2", alpha=17.0, beta=0.34, gamma=170.0, delta=0.017)
    cfg = perf_config(g2, max_batch=4, max_queue=0, max_num_tokens=None)
    rep = Replica(cfg)
    rep.arrive(Request(0.0, 96, 3), 0.0)
    rep.advance(10.0)
    _, _, first, finish, _, _ = rep.log.table("done")[0]
    assert first * 1000 == pytest.approx(170.0 + 0.017 * 96)          # Pf(1) = gamma + delta n
    assert (finish - first) * 1000 / 2 == pytest.approx(17.0 + 0.34)  # Dec(1) = alpha + beta
    g1 = PerfData(model="m", accelerator="X", generation="G1", alpha=17.0, beta=0.34)
    cfg = perf_config(g1, max_batch=4, max_queue=0, max_num_tokens=None)
    assert (cfg.alpha, cfg.beta, cfg.gamma, cfg.prefill_beta, cfg.prefill_overhead) == (17.0, 0.34, 0.0, 0.0, 0.0)


def test_from_system_with_a_solved_scenario():
    scenario = inferno_mip.load_scenario(SMALL)
    solution = json.loads((ROOT / "tests" / "data" / "sim" / "inferno-small-solution.json").read_text())
    alloc = {s["name"]: (s["accelerator"], s["replicas"], s["maxBatch"]) for s in solution["servers"]}
    fleet = Fleet.from_system(scenario, None, allocation=alloc)
    fleet.advance(120.0)
    w = fleet.window(30.0)
    assert set(w) == {s.name for s in scenario.servers}
    for name, win in w.items():
        acc, replicas, batch = alloc[name]
        assert (win.accelerator, win.replicas_ready, win.max_batch) == (acc, replicas, batch)
        assert win.offered_rate > 0 and win.completed_rate > 0


@pytest.mark.parametrize("call, match", [
    (lambda: Fleet.from_system(System(), None), "no servers"),
    (lambda: Fleet.from_system(system(), Workload.from_dict({"servers": {"zz": {"rate": {"phases": [
        {"for": 1, "rpm": 1}]}}}}, source="w.yaml")), "w.yaml: servers.zz: no such server"),
    (lambda: Fleet.from_system(system(), None, allocation={"s1": ("Q", 1, 4)}), "no perf data .* 'Q'"),
    (lambda: Fleet.from_system(system(), None, allocation={"nope": ("A", 1, 4)}), "allocation: nope"),
    (lambda: Fleet.from_system(system(), None, routing="random"), "routing"),
    (lambda: Fleet.from_system(system(), None, startup_delay=-1), "startup_delay"),
    (lambda: Fleet.from_system(system(), None).set_allocation("s9", "A", 1, 4), "no server 's9'"),
    (lambda: Fleet.from_system(system(), None).set_allocation("s1", "A", -1, 4), "replicas"),
    (lambda: Fleet.from_system(system(), None).window(0.0), "window start"),
])
def test_bad_fleet_input_is_named(call, match):
    with pytest.raises(SimulationError, match=match):
        call()


def test_window_with_no_traffic_reports_nan_latencies_not_errors():
    fleet = Fleet.from_system(system(rate=0.0, replicas=1), Workload.from_dict(
        {"servers": {"s1": {"rate": {"phases": [{"for": 1, "rpm": 0}]}}}}))
    fleet.advance(60.0)
    w = fleet.window(0.0)["s1"]
    assert w.completed == 0 and math.isnan(w.ttft_mean) and math.isnan(w.itl_p95) and w.running_mean == 0
    assert math.isnan(w.within_slo(10, 10))


def test_replica_config_of_a_g3_entry_is_the_entry():
    cfg = perf_config(PERF[0], 8, 80, 8192)
    assert cfg == ReplicaConfig(8.0, 0.016, 0.0005, 8, 80, 8192)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(st.tuples(st.floats(1.0, 290.0), st.sampled_from(["A", "B"]), st.integers(0, 3),
                                  st.sampled_from([2, 8])), max_size=4),
       routing=st.sampled_from(["jsq", "round-robin"]), delay=st.sampled_from([0.0, 20.0]))
def test_no_request_is_lost_whatever_the_allocation_changes(changes, routing, delay):
    load = Workload.from_dict({"servers": {"*": {"rate": {"phases": [{"for": 300, "rpm": 120}, {"for": 1, "rpm": 0}]},
                                                 "out_tokens": {"dist": "geometric", "mean": 100}}}})
    fleet = Fleet.from_system(system(replicas=2, batch=8), load, startup_delay=delay, routing=routing)
    for t, acc, replicas, batch in sorted(changes):
        fleet.advance(max(t, fleet.now))
        fleet.set_allocation("s1", acc, replicas, batch)
    fleet.advance(2000.0)  # arrivals stop at 300 s; everything accepted completes
    w = fleet.window(0.0)["s1"]
    assert w.offered_rate * 2000 == pytest.approx(w.completed + w.rejected)
    assert sum(r.engine.in_system for r in fleet.servers["s1"].replicas) == 0
