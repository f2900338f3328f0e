"""A real kube-apiserver (v1.20, built by .ci/kube/build-apiserver.sh) backed by etcd on 127.0.0.1.

Started once per test session by .ci/kube/run-apiserver.sh in a temporary folder, with RBAC and three users
(admin, operator, nobody); the Optimizer CRD from deploy/crd.yaml is installed. Tests skip with the reason
when the binary is not built (and fail under CI, which builds it). There is no controller-manager: Deployments
get no ReplicaSets or pods unless a test creates pods itself.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from kube_helpers import ROOT, Cluster, free_ports, install_crd, missing_tools


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    missing = missing_tools()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {missing}")
        pytest.skip(missing)
    folder = tmp_path_factory.mktemp("kube")
    api_port, etcd_port = free_ports(1), free_ports(2)
    env = {**os.environ, "D": str(folder), "API_PORT": str(api_port), "ETCD_PORT": str(etcd_port)}
    run = subprocess.run([str(ROOT / ".ci" / "kube" / "run-apiserver.sh")], env=env, capture_output=True, text=True,
                         timeout=180)
    try:
        if run.returncode != 0:
            pytest.fail(f"kube-apiserver did not start: {run.stdout}{run.stderr}")
        c = Cluster(folder, api_port)
        install_crd(c)
        yield c
    finally:  # the state is thrown away: no need for a graceful shutdown
        for name in ("apiserver", "etcd"):
            pid_file = folder / f"{name}.pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def namespace(cluster) -> str:
    return cluster.namespace()


