"""CPU time of a control cycle's Kubernetes stages against a real kube-apiserver, by fleet size.

    python benchmarks/k8s_cycle.py --sizes 10,50,200 --repeat 5

Starts etcd and kube-apiserver with .ci/kube/run-apiserver.sh (the binary from .ci/kube/build-apiserver.sh) in a
temporary folder, creates N managed Deployments, and times: collect (list Deployments, list each one's pods);
actuate with every server changed (a label patch and a scale write each); actuate with nothing to change
(reads only); and a whole cycle (collect, solve with HiGHS, actuate). Times are CPU seconds of this process
(``time.process_time``: the machine is shared) and of the API server (from /proc), medians over the repeats.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from inferno_mip.bench import machine  # noqa: E402
from inferno_mip.control.protocols import Target  # noqa: E402
from inferno_mip.io import parse_system  # noqa: E402
from inferno_mip.k8s.actuator import KubeActuator  # noqa: E402
from inferno_mip.k8s.collector import KubeCollector  # noqa: E402
from inferno_mip.k8s.cycle import run_cycle  # noqa: E402
from inferno_mip.k8s.kubeapi import api_client  # noqa: E402
from inferno_mip.k8s.resource import configmap_sections  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _static(servers: int) -> dict:
    docs = yaml.safe_load_all((ROOT / "deploy" / "example.yaml").read_text())
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    static = configmap_sections(cm["data"], "deploy/example.yaml")
    static["capacitydata"] = {"count": [{"type": "A100", "count": 8 * servers}, {"type": "L4", "count": 16 * servers}]}
    return static


def _fleet(api, namespace: str, n: int) -> None:
    from kubernetes import client

    apps = client.AppsV1Api(api)
    for i in range(n):
        name = f"s{i:04d}"
        labels = {"inferno.server.managed": "true", "inferno.server.name": name, "inferno.server.model": "llama_13b",
                  "inferno.server.class": "Premium", "inferno.server.allocation.accelerator": "A100",
                  "inferno.server.allocation.maxbatchsize": "64", "inferno.server.load.rpm": str(20 + 10 * (i % 7)),
                  "inferno.server.load.intokens": "128", "inferno.server.load.outtokens": "1024"}
        apps.create_namespaced_deployment(namespace, {
            "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "server", "image": "vllm:none"}]}}}})


def _timed(fn, apiserver_pid: int) -> tuple[float, float, object]:
    server, own = _cpu_seconds(apiserver_pid), time.process_time()
    out = fn()
    return time.process_time() - own, _cpu_seconds(apiserver_pid) - server, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50,200")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    from kubernetes import client

    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "D": folder, "API_PORT": str(_port()), "ETCD_PORT": str(_port())}
        started = subprocess.run([str(ROOT / ".ci" / "kube" / "run-apiserver.sh")], env=env, capture_output=True,
                                 text=True)
        if started.returncode != 0:
            print(f"error: kube-apiserver did not start: {started.stderr.strip()}", file=sys.stderr)
            return 2
        pids = {n: int(Path(folder, f"{n}.pid").read_text()) for n in ("apiserver", "etcd")}
        try:
            api = api_client(str(Path(folder) / "admin.kubeconfig"))
            rows = []
            for n in [int(x) for x in args.sizes.split(",")]:
                namespace = f"bench-{n}"
                client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
                _fleet(api, namespace, n)
                static = _static(n)
                system = parse_system({"system": {**static, "serverData": {"servers": []}}})
                collector, actuator = KubeCollector(api, namespace), KubeActuator(api, namespace, system=system)
                samples: dict[str, list[tuple[float, float]]] = {}
                for r in range(args.repeat):
                    targets = {f"s{i:04d}": Target("A100" if (i + r) % 2 else "L4", 1 + (i + r) % 2, 32)
                               for i in range(n)}
                    for stage, fn in (("collect", collector.collect),
                                      ("actuate, all changed", lambda: actuator.actuate(targets)),
                                      ("actuate, nothing to change", lambda: actuator.actuate(targets)),
                                      ("cycle (collect, solve, actuate)", lambda: run_cycle(
                                          collector, actuator, static, solver="highs"))):
                        own, server, _ = _timed(fn, pids["apiserver"])
                        samples.setdefault(stage, []).append((own, server))
                for stage, values in samples.items():
                    rows.append((n, stage, statistics.median(v[0] for v in values),
                                 statistics.median(v[1] for v in values)))
            print(f"Machine: {machine()}; kube-apiserver v1.20.2 and etcd on 127.0.0.1; medians of {args.repeat}\n")
            print("| Deployments | stage | client CPU s | API server CPU s | client ms per Deployment |")
            print("|---|---|---|---|---|")
            for n, stage, own, server in rows:
                print(f"| {n} | {stage} | {own:.3f} | {server:.3f} | {1000 * own / n:.2f} |")
        finally:
            for pid in pids.values():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
