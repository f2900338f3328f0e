"""Observers produce Observations for the tuner: simulated (known truth), offline (CSV traces), online (Prometheus)."""

from .offline import OfflineObserver, TraceObserver
from .online import OnlineObserver, PrometheusConfig
from .simulated import Phase, SimulatedObserver

__all__ = ["OfflineObserver", "OnlineObserver", "Phase", "PrometheusConfig", "SimulatedObserver", "TraceObserver"]
