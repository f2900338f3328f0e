"""The tuner service: inferno's TunerService (tune, calibrate, merge, warm-up, calibration status), thread-safe,
with its whole state persisted to a JSON file after every change.

Per (model, accelerator): collect ``init_obs`` observations, batch-fit (InitEstimator with the condition guard),
then either run the EKF over every replica each cycle (mode "ekf") or refit a sliding window (mode
"sliding-window", with a one-step EKF excursion when the window is ill-conditioned). ``ServiceSettings.compat``
reproduces inferno (linear EKF, fixed R, Nelder-Mead fits); the default uses the improved filter and
least-squares fits.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .config import FilterConfig, default_config, load_config
from .errors import TunerError
from .estimators import InitEstimator, SlidingWindowEstimator, guess_init_state
from .merging import merge
from .observation import Observation
from .specs import NO_TRAFFIC, Replica, parse_specs
from .store import LearnedParameters, StateFile, now_rfc3339, pair_key, split_key
from .tuner import PerfTuner, TunerOptions

__all__ = ["ServiceError", "ServiceSettings", "TunerService", "excursion", "pair_work"]

MAX_FLOAT = sys.float_info.max
SLIDING = "sliding-window"
EKF = "ekf"


class ServiceError(TunerError):
    """A request the service cannot satisfy (HTTP 422), e.g. still collecting initial observations."""


@dataclass(frozen=True)
class ServiceSettings:
    """Service knobs; ``from_env`` reads inferno's environment variables (invalid values keep the default)."""

    config: FilterConfig = field(default_factory=default_config)
    warm_up_cycles: int = 5
    init_obs: int = 5
    hold_back: bool = True
    mode: str = EKF
    window: int = 10
    residual_threshold: float = 0.5
    init_fit_threshold: float = 10.0
    max_condition: float = 1000.0
    compat: bool = False  # inferno's filter and Nelder-Mead fits
    options: TunerOptions | None = None  # default: TunerOptions() or TunerOptions.reference() if compat
    state_file: str | None = None
    max_obs: int = 100  # cap of the per-pair init observation list

    @property
    def tuner_options(self) -> TunerOptions:
        return self.options or (TunerOptions.reference() if self.compat else TunerOptions())

    @property
    def fit_method(self) -> str:
        return "nm" if self.compat else "lsq"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> ServiceSettings:
        env = os.environ if env is None else env
        kw: dict[str, Any] = {}

        def num(name, key, conv, ok):
            try:
                v = conv(env[name])
                if ok(v):
                    kw[key] = v
            except (KeyError, ValueError):
                pass

        num("TUNER_WARM_UP_CYCLES", "warm_up_cycles", int, lambda v: v >= 0)
        num("TUNER_INIT_OBS", "init_obs", int, lambda v: v >= 1)
        num("TUNER_WINDOW_SIZE", "window", int, lambda v: v >= 1)
        num("TUNER_RESIDUAL_THRESHOLD", "residual_threshold", float, lambda v: v > 0 and math.isfinite(v))
        num("TUNER_INIT_FIT_THRESHOLD", "init_fit_threshold", float, lambda v: v >= 0 and math.isfinite(v))
        num("TUNER_MAX_CONDITION_NUMBER", "max_condition", float, lambda v: v >= 0 and math.isfinite(v))
        if "TUNER_INIT_HOLD_BACK" in env:
            kw["hold_back"] = env["TUNER_INIT_HOLD_BACK"] in ("true", "1")
        if "TUNER_ESTIMATOR_MODE" in env:
            kw["mode"] = SLIDING if env["TUNER_ESTIMATOR_MODE"] == SLIDING else EKF
        if env.get("TUNER_COMPAT") in ("true", "1"):
            kw["compat"] = True
        if env.get("TUNER_STATE_FILE"):
            kw["state_file"] = env["TUNER_STATE_FILE"]
        cdir = env.get("CONFIG_DATA_DIR")
        if cdir and (Path(cdir) / "default-config-data.json").exists():
            kw["config"] = load_config(Path(cdir) / "default-config-data.json")
        kw.update(overrides)
        return cls(**kw)


def _make_tuner(settings: ServiceSettings, x, P=None, *, log_space_P: bool | None = None) -> PerfTuner:
    """A tuner as inferno's createTuner: x0 = x, bounds re-centred [x/10, 10x] if the config is bounded."""
    opt = settings.tuner_options
    cfg = settings.config
    bounds = None
    if cfg.bounded:
        cfg = cfg.with_state(x)
        bounds = cfg.bounds
    if P is not None and log_space_P is not None and log_space_P != opt.log_space:
        P = None  # stored in the other space: restart from Q
    return PerfTuner(cfg, options=opt, x0=x, P0=P, bounds=bounds if opt.use_bounds else None)


def excursion(settings: ServiceSettings, seed, obs: Observation):
    """inferno's transient EKF excursion: one ungated-NIS step from a held fit; returns the StepResult."""
    tuner = _make_tuner(replace(settings, config=replace(settings.config, bounded=True)), np.array(seed, float))
    return tuner.step(obs, skip_nis=True)


def _run_work(service: TunerService, kind: str, key: str, reps: list[Replica]) -> str | None:
    """Run one pair's `kind` of work on `service`; the reason it produced nothing, or None."""
    try:
        (service._tune_group if kind == "tune" else service._calibrate_group)(key, reps)
    except ServiceError as exc:
        return str(exc)
    return None


def pair_work(settings: ServiceSettings, kind: str, key: str, state: dict,
              reps: list[Replica]) -> tuple[dict, str | None]:
    """One pair's tune or calibrate on a private copy of its state, as a worker process runs it: returns the
    pair's new state and the reason it produced nothing (or None). Same arithmetic as in process."""
    service = TunerService(replace(settings, state_file=None))
    service._restore(key, state)
    error = _run_work(service, kind, key, reps)
    return service._pair_state(key), error


class TunerService:
    """Thread-safe tuner service, locked per (model, accelerator): requests for different pairs run at once.

    Work on a pair holds that pair's lock; afterwards the pair's state is copied into a snapshot, and the state
    file is written from the snapshots, so a save never reads a pair half-way through an update. The tables
    are dicts keyed by pair: single inserts and copies are atomic in CPython, and readers iterate copies.
    """

    def __init__(self, settings: ServiceSettings | None = None, workers: Executor | None = None):
        self.settings = settings or ServiceSettings()
        self.workers = workers  # a process pool for the pairs' work (None: in the calling thread)
        self._lock = threading.Lock()  # guards the lock table and the snapshots; held only briefly
        self._save_lock = threading.Lock()
        self._pair_locks: dict[str, threading.Lock] = {}
        self._snapshots: dict[str, dict] = {}
        self._file = StateFile(self.settings.state_file)
        self.store: dict[str, LearnedParameters] = {}
        self.estimators: dict[str, InitEstimator] = {}
        self.sliding: dict[str, SlidingWindowEstimator] = {}
        self.fallbacks: set[str] = set()
        self.calibrated: set[str] = set()
        self._load(self._file.load())
        for key in set(self.store) | set(self.estimators) | set(self.sliding) | self.fallbacks | self.calibrated:
            self._snapshot(key)

    def _pair_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._pair_locks.setdefault(key, threading.Lock())

    def _pair_state(self, key: str) -> dict:
        """One pair's state as plain data (what the state file holds for it)."""
        lp, ie, swe = self.store.get(key), self.estimators.get(key), self.sliding.get(key)
        return {"store": lp.to_dict() if lp else None, "estimator": ie.to_dict() if ie else None,
                "sliding": swe.to_dict() if swe else None, "fallback": key in self.fallbacks,
                "calibrated": key in self.calibrated}

    def _snapshot(self, key: str) -> None:
        """Copy one pair's state for saving (called with the pair's lock held, or before serving)."""
        snap = self._pair_state(key)
        with self._lock:
            self._snapshots[key] = snap

    def _restore(self, key: str, snap: dict) -> None:
        """Set one pair's state from :meth:`_pair_state`'s plain data."""
        tables = ((self.store, "store", LearnedParameters.from_dict),
                  (self.estimators, "estimator", lambda v: self._new_ie(min_obs=v.get("min_obs")).load(v)),
                  (self.sliding, "sliding", lambda v: self._new_swe().load(v)))
        for table, part, build in tables:
            if snap.get(part) is None:
                table.pop(key, None)
            else:
                table[key] = build(snap[part])
        for flag, members in (("fallback", self.fallbacks), ("calibrated", self.calibrated)):
            if snap.get(flag):
                members.add(key)
            else:
                members.discard(key)

    # -- persistence ---------------------------------------------------------------------------------------
    def _new_ie(self, min_obs: int | None = None, hold_back: bool | None = None) -> InitEstimator:
        s = self.settings
        return InitEstimator(s.init_obs if min_obs is None else min_obs,
                             hold_back=s.hold_back if hold_back is None else hold_back,
                             max_condition=s.max_condition, seed=s.config.init_state, method=s.fit_method,
                             max_obs=s.max_obs, perf_model=s.tuner_options.perf_model)

    def _new_swe(self) -> SlidingWindowEstimator:
        s = self.settings
        return SlidingWindowEstimator(s.window, s.init_obs, s.residual_threshold, max_condition=s.max_condition,
                                      seed=s.config.init_state, method=s.fit_method,
                                      perf_model=s.tuner_options.perf_model)

    def state(self) -> dict:
        """The whole persisted state, as of the last completed update of each pair."""
        with self._lock:
            snaps = sorted(self._snapshots.items())

        def table(part: str) -> dict:
            return {k: snap[part] for k, snap in snaps if snap[part] is not None}

        return {"version": 1, "store": table("store"), "estimators": table("estimator"), "sliding": table("sliding"),
                "fallbacks": [k for k, snap in snaps if snap["fallback"]],
                "calibrated": [k for k, snap in snaps if snap["calibrated"]]}

    def _load(self, data: dict) -> None:
        if not data:
            return
        try:
            parts = {"store": data.get("store", {}), "estimator": data.get("estimators", {}),
                     "sliding": data.get("sliding", {})}
            flags = {"fallback": set(data.get("fallbacks", [])), "calibrated": set(data.get("calibrated", []))}
            for key in set().union(*parts.values(), *flags.values()):
                self._restore(key, {**{part: table.get(key) for part, table in parts.items()},
                                    **{flag: key in members for flag, members in flags.items()}})
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise TunerError(f"{self._file.path}: invalid tuner state: {exc}") from None

    def _save(self) -> None:
        with self._save_lock:
            self._file.save(self.state())

    # -- tune -----------------------------------------------------------------------------------------------
    def tune(self, specs: Any) -> tuple[dict, list[str]]:
        """One control cycle: returns (ModelData of the requested pairs with stored params, issues)."""
        groups, issues = self._active_groups(specs)
        self._each_group(groups, "tune", issues)
        data = self._model_data(groups)
        if not data["models"]:
            raise ServiceError("tuning produced no results: " + "; ".join(issues))
        return data, issues

    def _active_groups(self, specs: Any) -> tuple[dict[str, list[Replica]], list[str]]:
        """Replicas with traffic grouped per (model, accelerator), and why the others were left out."""
        replicas = parse_specs(specs)
        issues = [r.reason for r in replicas if r.observation is None and NO_TRAFFIC not in r.reason]
        groups = self._group(replicas)
        if not groups:
            raise ServiceError("no replicas with active traffic" + (f": {'; '.join(issues)}" if issues else ""))
        return groups, issues

    def _each_group(self, groups: dict[str, list[Replica]], kind: str, issues: list[str]) -> dict[str, list[Replica]]:
        """The `kind` of work ("tune" or "calibrate") per group under the pair's lock (a failing group is an
        issue, not an error); one pair locked at a time, so no lock order can deadlock; state saved after.
        With a worker pool the work runs there on a copy of the pair's state, which then replaces the pair's."""
        done = {}
        try:
            for key, reps in groups.items():
                with self._pair_lock(key):
                    try:
                        if self.workers is None:
                            error = _run_work(self, kind, key, reps)
                        else:
                            state, error = self.workers.submit(pair_work, self.settings, kind, key,
                                                               self._pair_state(key), reps).result()
                            self._restore(key, state)
                        if error is None:
                            done[key] = reps
                        else:
                            issues.append(f"{key}: {error}")
                    finally:
                        self._snapshot(key)
        finally:
            self._save()
        return done

    @staticmethod
    def _group(replicas: list[Replica]) -> dict[str, list[Replica]]:
        groups: dict[str, list[Replica]] = {}
        for r in replicas:
            if r.model and r.accelerator and r.arrival_rate > 0:
                groups.setdefault(r.key, []).append(r)
        return groups

    def _model_data(self, groups: dict[str, list[Replica]]) -> dict:
        models = []
        for key, reps in groups.items():
            lp = self.store.get(key)
            if lp is None:
                continue
            model, acc = split_key(key)
            models.append({"name": model, "acc": acc, "accCount": 1,
                           "maxBatchSize": max(r.max_batch for r in reps),
                           "perfParms": {"alpha": lp.alpha, "beta": lp.beta, "gamma": lp.gamma}})
        return {"models": models}

    def _tune_group(self, key: str, reps: list[Replica]) -> None:
        envs = [r.observation for r in reps if r.observation is not None]
        if not envs:
            raise ServiceError("no valid replica observations (" + "; ".join(r.reason for r in reps) + ")")
        ie = self.estimators.get(key)
        if ie is None:
            ie = self.estimators[key] = self._new_ie()
        ie.add(envs[0])
        if not ie.ready:
            raise ServiceError(f"collecting initial observations ({len(ie.observations)}/{ie.min_obs})")
        if self.settings.mode == SLIDING and key not in self.fallbacks:
            return self._tune_sliding(key, ie, envs[0])
        fit_init = None
        if key not in self.store and not ie.fit_done:
            try:
                fit_init = ie.fit()
            except TunerError:
                fit_init = None
        self._run_ekf(key, envs, ie, fit_init)

    def _initial_state(self, key: str, ie: InitEstimator, fit_init):
        lp = self.store.get(key)
        if lp is not None:
            return np.array(lp.x), lp.covariance, lp
        if fit_init is not None:
            return np.array(fit_init, float), None, None
        guess = guess_init_state(ie.observations[0] if ie.observations else None, self.settings.config.init_state)
        if guess is not None:
            return guess, None, None
        return np.array(self.settings.config.init_state, float), None, None

    def _run_ekf(self, key: str, envs: list[Observation], ie: InitEstimator, fit_init) -> None:
        x, P, lp = self._initial_state(key, ie, fit_init)
        tuner = _make_tuner(self.settings, x, None if P is None else np.array(P),
                            log_space_P=None if lp is None else lp.log_space)
        if lp is not None:
            tuner.rejected = [Observation(**o) for o in lp.rejected]
        skip = (lp.update_count if lp else 0) < self.settings.warm_up_cycles
        last, reasons = None, []
        for obs in envs:
            res = tuner.step(obs, skip_nis=skip)
            if res.accepted:
                last = res
            else:
                reasons.append(res.reason)
        if last is None:
            if lp is not None:  # keep the lock-out buffer so that recovery can trigger on a later cycle
                lp.rejected = [o.to_dict() for o in tuner.rejected]
            raise ServiceError("no accepted results (" + "; ".join(reasons) + ")")
        a, b, g = last.x
        self.store[key] = LearnedParameters(
            a, b, g, nis=last.nis, update_count=(lp.update_count if lp else 0) + 1,
            covariance=[list(r) for r in last.covariance], last_updated=now_rfc3339(),
            log_space=self.settings.tuner_options.log_space, rejected=[o.to_dict() for o in tuner.rejected])

    def _tune_sliding(self, key: str, ie: InitEstimator, env: Observation) -> None:
        s = self.settings
        swe = self.sliding.get(key)
        if swe is None:
            swe = self._new_swe()
            swe.seed_observations(ie.observations)
            try:
                fitted = ie.fit()
                poor = s.init_fit_threshold > 0 and ie.last_fit_value > s.init_fit_threshold
            except TunerError:
                fitted, poor = None, s.init_fit_threshold > 0
                if not poor:
                    raise ServiceError("initial fit failed") from None
            if poor:
                self.fallbacks.add(key)
                raise ServiceError(f"initial fit too poor (objective {ie.last_fit_value:.4g} > "
                                   f"{s.init_fit_threshold}): falling back to the EKF")
            swe.seed_last_fit(fitted)
            self.sliding[key] = swe
        else:
            swe.add(env)
        if not swe.ready:
            raise ServiceError(f"sliding window filling ({len(swe.observations)}/{swe.min_obs})")
        try:
            fitted = swe.fit()
        except TunerError as exc:
            raise ServiceError(str(exc)) from None
        if swe.held:
            res = excursion(s, fitted, env)
            if res.accepted:
                fitted = np.array(res.x)
        lp = self.store.get(key)
        a, b, g = (float(v) for v in fitted)
        self.store[key] = LearnedParameters(a, b, g, nis=0.0, update_count=(lp.update_count if lp else 0) + 1,
                                            covariance=None, last_updated=now_rfc3339())

    # -- calibrate --------------------------------------------------------------------------------------------
    def calibrate(self, specs: Any) -> tuple[dict, list[str]]:
        """One-shot fit of a load sweep per pair; returns ModelData of the pairs calibrated by this call."""
        groups, issues = self._active_groups(specs)
        done = self._each_group(groups, "calibrate", issues)
        data = self._model_data(done)
        if not data["models"]:
            raise ServiceError("no pair calibrated: " + "; ".join(issues))
        return data, issues

    def _calibrate_group(self, key: str, reps: list[Replica]) -> None:
        s = self.settings
        envs = [r.observation for r in reps if r.observation is not None]
        if len(envs) < 2:
            raise ServiceError(f"calibration needs at least 2 valid observations, got {len(envs)}")
        ie = self._new_ie(min_obs=len(envs), hold_back=False)
        for e in envs:
            ie.add(e)
        try:
            fitted = ie.fit()
        except TunerError as exc:
            raise ServiceError(f"calibration fit failed: {exc}") from None
        if s.max_condition > 0 and ie.last_condition > s.max_condition:
            raise ServiceError(f"calibration sweep is ill-conditioned (kappa {ie.last_condition:.3g} > "
                               f"{s.max_condition:g}): vary load and token sizes")
        if ie.last_fit_value == MAX_FLOAT:
            raise ServiceError("calibration fit failed (single-point fallback)")
        if s.init_fit_threshold > 0 and ie.last_fit_value > s.init_fit_threshold:
            raise ServiceError(f"calibration fit too poor (objective {ie.last_fit_value:.4g})")
        a, b, g = (float(v) for v in fitted)
        self.store[key] = LearnedParameters(a, b, g, update_count=s.warm_up_cycles, last_updated=now_rfc3339())
        self.estimators[key] = ie
        self.fallbacks.discard(key)
        if s.mode == SLIDING:
            swe = self._new_swe()
            swe.seed_observations(envs)
            swe.seed_last_fit(fitted)
            self.sliding[key] = swe
        self.calibrated.add(key)

    # -- queries ------------------------------------------------------------------------------------------------
    def get_params(self, model: str, accelerator: str) -> dict | None:
        lp = self.store.get(pair_key(model, accelerator))  # replaced whole on update, never edited in place
        if lp is None:
            return None
        return {"model": model, "accelerator": accelerator, "alpha": lp.alpha, "beta": lp.beta,
                    "gamma": lp.gamma, "nis": lp.nis, "updateCount": lp.update_count,
                    "lastUpdated": lp.last_updated}

    def params(self) -> dict[tuple[str, str], dict[str, float]]:
        """All stored parameters, keyed (model, accelerator): the input of :func:`merge`."""
        return {split_key(k): {"alpha": v.alpha, "beta": v.beta, "gamma": v.gamma}
                for k, v in sorted(list(self.store.items()))}

    def merge(self, model_data: Mapping | None) -> dict:
        return merge(model_data, self.params())

    def warming_up(self) -> bool:
        s = self.settings
        estimators = list(self.estimators.items())
        if any(not ie.ready and ie.hold_back for _, ie in estimators):
            return True
        if s.mode == SLIDING:
            for key, ie in estimators:
                if ie.ready and key not in self.fallbacks:
                    swe = self.sliding.get(key)
                    if swe is None or not swe.ready:
                        return True
        if s.warm_up_cycles == 0:
            return False
        return any(lp.update_count < s.warm_up_cycles for lp in list(self.store.values()))

    def calibration_statuses(self) -> list[dict]:
        out = []
        mk = self.settings.max_condition
        for key, ie in sorted(list(self.estimators.items())):
            model, acc = split_key(key)
            kappa = ie.last_condition
            ill = mk > 0 and kappa > mk
            out.append({"model": model, "accelerator": acc, "storePresent": key in self.store,
                        "calibrated": key in self.calibrated, "obsCount": len(ie.observations),
                        "obsTarget": ie.min_obs, "conditionNumber": kappa if math.isfinite(kappa) else MAX_FLOAT,
                        "illConditioned": ill,
                        "needsCalibration": ie.ready and ie.fit_done and ill and key not in self.calibrated})
        return out
