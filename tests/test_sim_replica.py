"""The one-replica simulator against an independent naive loop and against known limits."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferno_mip.sim import LengthDist, ReplicaConfig, SimulationError, simulate_replica
from inferno_mip.sim.replica import Replica, Request
from inferno_mip.sim.single import poisson_arrivals, request_table
from inferno_mip.sim.stats import replica_sample


def naive_replica(cfg: ReplicaConfig, arrivals, n_in, n_out):
    """Iteration by iteration, every request touched every iteration: the reference the fast engine must match.

    Returns per-request admitted, first_token, finish (inf = never; rejected requests have admitted = nan) and
    the list of (time, gap) of every token after the first.
    """
    A, B, G = cfg.alpha / 1000, cfg.beta / 1000, cfg.gamma / 1000
    Bp = B if cfg.prefill_beta is None else cfg.prefill_beta / 1000
    P = cfg.prefill_overhead / 1000
    cap = cfg.max_batch + cfg.max_queue
    size = len(arrivals)
    admitted = np.full(size, np.inf)
    first = np.full(size, np.inf)
    finish = np.full(size, np.inf)
    gaps = []
    waiting: deque[int] = deque()
    running: list[dict] = []  # admission order
    i = 0
    t = 0.0

    def arrive(k):
        if len(running) + len(waiting) >= cap:
            admitted[k] = np.nan
        else:
            waiting.append(k)

    while True:
        if not running and not waiting:
            if i == size:
                break
            t = max(t, arrivals[i])
            arrive(i)
            i += 1
        budget = math.inf if cfg.max_num_tokens is None else cfg.max_num_tokens
        tokens = prompt = read = 0
        work = []  # (request state, prompt tokens this iteration; 0 = decode)
        for r in running:
            if r["done"] == n_in[r["k"]]:
                work.append((r, 0))
                tokens += 1
                read += r["ctx"] + 1
                budget -= 1
        for r in running:
            if r["done"] < n_in[r["k"]] and budget > 0:
                ch = min(n_in[r["k"]] - r["done"], budget)
                work.append((r, ch))
                prompt += ch
                read += r["ctx"] + ch
                budget -= ch
        while waiting and len(running) < cfg.max_batch and budget > 0:
            k = waiting.popleft()
            admitted[k] = t
            r = {"k": k, "done": 0, "ctx": 0, "out": 0}
            running.append(r)
            ch = min(n_in[k], budget)
            work.append((r, ch))
            prompt += ch
            read += ch
            budget -= ch
        end = t + A + B * tokens + Bp * prompt + G * read + (P if prompt else 0.0)
        while i < size and arrivals[i] < end:
            arrive(i)
            i += 1
        for r, ch in work:
            k = r["k"]
            if ch == 0:
                r["ctx"] += 1
                r["out"] += 1
                gaps.append((end, end - t))
            else:
                r["done"] += ch
                r["ctx"] += ch
                if r["done"] == n_in[k]:
                    r["out"] = 1
                    first[k] = end
            if r["out"] == n_out[k]:
                finish[k] = end
        running = [r for r in running if r["out"] < n_out[r["k"]]]
        t = end
    return admitted, first, finish, gaps


def fast_replica(cfg, arrivals, n_in, n_out, until):
    rep = Replica(cfg)
    for t, n, m in zip(arrivals, n_in, n_out):
        rep.advance(t)
        rep.arrive(Request(t, n, m), t)
    rep.advance(until)
    return rep


def workload(seed, rate, duration, n_in: LengthDist, n_out: LengthDist):
    rng = np.random.default_rng(seed)
    times = poisson_arrivals(rng, rate, duration)
    return times.tolist(), n_in.sample(rng, len(times)).tolist(), n_out.sample(rng, len(times)).tolist()


def assert_agree(cfg, arrivals, n_in, n_out):
    admitted, first, finish, gaps = naive_replica(cfg, arrivals, n_in, n_out)
    end = max(finish[np.isfinite(finish)].max(initial=0.0), arrivals[-1]) + 1.0
    rep = fast_replica(cfg, arrivals, n_in, n_out, end)
    table = request_table(rep)
    accepted = ~np.isnan(admitted)
    assert len(table["arrival"]) == accepted.sum()
    assert len(rep.log.rejected) == (~accepted).sum()
    np.testing.assert_array_equal(table["arrival"], np.asarray(arrivals)[accepted])
    for name, ref in (("admitted", admitted), ("first_token", first), ("finish", finish)):
        np.testing.assert_allclose(table[name], ref[accepted], rtol=1e-9, atol=1e-9, err_msg=name)
    # Inter-token gaps: the same multiset over the whole run and within a window.
    for t0, t1 in ((0.0, end), (arrivals[len(arrivals) // 3], arrivals[2 * len(arrivals) // 3])):
        s = replica_sample(rep, t0, t1)
        ref = np.array([g for e, g in gaps if t0 <= e < t1])
        assert s.gap_weights.sum() == len(ref)
        if len(ref):
            fast = np.repeat(s.gaps, s.gap_weights.astype(int))
            np.testing.assert_allclose(np.sort(fast), np.sort(ref), rtol=1e-9)


@pytest.mark.parametrize("max_num_tokens, prefill", [(None, {}), (160, {}),
                                                     (None, dict(prefill_beta=0.01, prefill_overhead=30.0))])
def test_fast_engine_agrees_with_naive_loop_request_by_request(max_num_tokens, prefill):
    cfg = ReplicaConfig(alpha=8.0, beta=0.05, gamma=0.002, max_batch=6, max_queue=5, max_num_tokens=max_num_tokens,
                        **prefill)
    arrivals, n_in, n_out = workload(3, 4.0, 60.0, LengthDist.lognormal(120, 0.8), LengthDist.geometric(40))
    assert_agree(cfg, arrivals, n_in, n_out)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 8), queue=st.integers(0, 6),
       budget=st.sampled_from([None, 8, 50, 300]), rate=st.floats(0.5, 30.0),
       gamma=st.sampled_from([0.0, 0.001, 0.01]), out_mean=st.sampled_from([1.0, 3.0, 20.0]))
def test_fast_engine_agrees_with_naive_loop_property(seed, batch, queue, budget, rate, gamma, out_mean):
    if budget is not None and budget < batch:
        budget = batch
    cfg = ReplicaConfig(alpha=5.0, beta=0.02, gamma=gamma, max_batch=batch, max_queue=queue, max_num_tokens=budget)
    arrivals, n_in, n_out = workload(seed, rate, 8.0, LengthDist.geometric(60), LengthDist.geometric(out_mean))
    if arrivals:
        assert_agree(cfg, arrivals, n_in, n_out)


def test_littles_law_on_its_own_outputs():
    cfg = ReplicaConfig(alpha=8.0, beta=0.016, gamma=0.0005, max_batch=16, max_queue=64)
    res = simulate_replica(cfg, 4.0, LengthDist.fixed(256), LengthDist.geometric(256), duration=3000, warmup=100,
                           seed=1)
    assert res.waiting_mean > 0.5 and res.rejected == 0  # queueing happens, nothing lost
    in_system = res.running_mean + res.waiting_mean
    assert in_system == pytest.approx(res.throughput * res.response_mean / 1000.0, rel=0.03)
    assert res.throughput == pytest.approx(res.offered_rate, rel=0.02)


def test_erlang_loss_with_one_slot_and_no_queue():
    # M = 1, Q = 0: an M/G/1/1 loss system; blocking = rho / (1 + rho) whatever the service distribution.
    alpha, beta, n, m = 10.0, 0.1, 100, 50.0
    cfg = ReplicaConfig(alpha=alpha, beta=beta, gamma=0.0, max_batch=1, max_queue=0)
    service = (alpha + beta * n + (m - 1) * (alpha + beta)) / 1000.0  # prefill emits token 1, m-1 decode steps
    for rate in (0.5, 2.0):
        res = simulate_replica(cfg, rate, LengthDist.fixed(n), LengthDist.geometric(m), duration=4000, warmup=50,
                               seed=2)
        rho = rate * service
        assert res.blocking == pytest.approx(rho / (1 + rho), abs=0.02)
        assert res.waiting_mean == 0.0
        assert res.running_mean == pytest.approx(rho / (1 + rho), abs=0.02)  # P(busy) = blocking (PASTA)


def test_light_load_ttft_is_boundary_wait_plus_prefill():
    alpha, beta, gamma, n, m = 8.0, 0.016, 0.0005, 256, 64
    cfg = ReplicaConfig(alpha=alpha, beta=beta, gamma=gamma, max_batch=32, max_queue=0)
    rate = 0.2
    res = simulate_replica(cfg, rate, LengthDist.fixed(n), LengthDist.fixed(m), duration=20000, warmup=0, seed=4)
    req = res.requests
    prefill = (alpha + beta * n + gamma * n) / 1000.0
    ttft = req["first_token"] - req["arrival"]
    idle = req["admitted"] == req["arrival"]  # found the replica idle: started at once, prefilled alone
    np.testing.assert_allclose(ttft[idle], prefill, rtol=0, atol=1e-9)  # clock at 2e4 s: float rounding
    # Otherwise: wait for the boundary of the iteration under way, then prefill beside the running request.
    iterations = [prefill] + [(alpha + beta + gamma * (n + j)) / 1000.0 for j in range(1, m)]
    busy_wait = req["admitted"][~idle] - req["arrival"][~idle]
    longest = (alpha + beta * (n + 2) + gamma * (n + 2 * (n + m))) / 1000.0  # a prefill beside two decoders
    assert np.all(busy_wait > 0) and np.all(busy_wait <= longest)
    service = sum(iterations)
    p_busy = 1 - math.exp(-rate * service)  # the batch never fills: requests present ~ Poisson(rate * service)
    residual = sum(d * d for d in iterations) / service / 2  # mean residual of the iteration under way
    extra = (beta + gamma * (n + m / 2)) / 1000.0  # the running request's token in the prefill iteration
    expected = prefill + p_busy * (residual + extra)
    assert res.ttft_mean / 1000.0 == pytest.approx(expected, abs=0.15 * p_busy * residual)


def test_same_seed_same_output_other_seed_other_output():
    cfg = ReplicaConfig(alpha=8.0, beta=0.016, gamma=0.0005, max_batch=8, max_queue=16, max_num_tokens=512)
    run = lambda seed: simulate_replica(cfg, 1.5, LengthDist.lognormal(300, 1.0), LengthDist.geometric(200),
                                        duration=300, warmup=30, seed=seed)
    a, b, c = run(7), run(7), run(8)
    for key in a.requests:
        np.testing.assert_array_equal(a.requests[key], b.requests[key])
    assert (a.ttft_mean, a.itl_p95, a.throughput) == (b.ttft_mean, b.itl_p95, b.throughput)
    assert a.ttft_mean != c.ttft_mean


def test_arrival_times_do_not_depend_on_length_distributions():
    cfg = ReplicaConfig(alpha=8.0, beta=0.016, gamma=0.0005, max_batch=8, max_queue=100)
    a = simulate_replica(cfg, 1.0, LengthDist.fixed(100), LengthDist.fixed(50), duration=100, warmup=0, seed=3)
    b = simulate_replica(cfg, 1.0, LengthDist.geometric(100), LengthDist.geometric(80), duration=100, warmup=0,
                         seed=3)
    np.testing.assert_array_equal(a.requests["arrival"], b.requests["arrival"])


@pytest.mark.parametrize("kwargs, field", [
    (dict(alpha=-1.0, beta=0.0, gamma=0.0, max_batch=1), "alpha"),
    (dict(alpha=float("nan"), beta=0.0, gamma=0.0, max_batch=1), "alpha"),
    (dict(alpha=0.0, beta=0.0, gamma=0.0, max_batch=1), "all 0"),
    (dict(alpha=1.0, beta=0.0, gamma=0.0, max_batch=0), "max_batch"),
    (dict(alpha=1.0, beta=0.0, gamma=0.0, max_batch=4, max_queue=-1), "max_queue"),
    (dict(alpha=1.0, beta=0.0, gamma=0.0, max_batch=4, max_num_tokens=2), "max_num_tokens"),
])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(SimulationError, match=field):
        ReplicaConfig(**kwargs)


@pytest.mark.parametrize("make, field", [
    (lambda: LengthDist.fixed(0), "mean"), (lambda: LengthDist.geometric(float("nan")), "mean"),
    (lambda: LengthDist.lognormal(10, -1), "cv"), (lambda: LengthDist.trace([]), "empty"),
    (lambda: LengthDist.trace([3, 0]), ">= 1"),
])
def test_bad_lengths_name_the_field(make, field):
    with pytest.raises(SimulationError, match=field):
        make()


def test_bad_rate_and_duration():
    cfg = ReplicaConfig(alpha=1.0, beta=0.0, gamma=0.0, max_batch=1)
    with pytest.raises(SimulationError, match="rate"):
        simulate_replica(cfg, -1.0, LengthDist.fixed(1), LengthDist.fixed(1))
    with pytest.raises(SimulationError, match="warmup"):
        simulate_replica(cfg, 1.0, LengthDist.fixed(1), LengthDist.fixed(1), duration=10, warmup=10)


@pytest.mark.parametrize("dist, mean, cv", [
    (LengthDist.geometric(200), 200, math.sqrt(1 - 1 / 200)), (LengthDist.lognormal(300, 0.5), 300, 0.5),
    (LengthDist.fixed(77.4), 77, 0.0),
])
def test_length_samples_have_the_stated_mean_and_cv(dist, mean, cv):
    x = dist.sample(np.random.default_rng(0), 200_000)
    assert x.min() >= 1
    assert x.mean() == pytest.approx(mean, rel=0.01)
    assert x.std() / x.mean() == pytest.approx(cv, abs=0.01)
