"""Helpers for the tests against a real kube-apiserver: the cluster handle, managed Deployments, the example
data, and a TCP proxy that can take the API server away and bring it back."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("INFERNO_KUBE_CACHE", "/var/cache/inferno-mip-kube"))
APISERVER = CACHE / "bin" / "kube-apiserver"
EXAMPLE = ROOT / "deploy" / "example.yaml"


def missing_tools() -> str:
    if not APISERVER.is_file():
        return f"kube-apiserver not built ({APISERVER}); run .ci/kube/build-apiserver.sh (about 10 min, once)"
    for tool in ("etcd", "openssl", "curl"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (.ci/kube/build-apiserver.sh installs it)"
    return ""


def free_ports(n: int) -> int:
    """A port p with p..p+n-1 free on 127.0.0.1."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n < 65535 and all(_free(base + i) for i in range(1, n)):
            return base
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Cluster:
    folder: Path
    port: int

    def kubeconfig(self, user: str = "admin") -> str:
        return str(self.folder / f"{user}.kubeconfig")

    def api(self, user: str = "admin"):
        from inferno_mip.k8s.kubeapi import api_client

        return api_client(self.kubeconfig(user))

    def namespace(self) -> str:
        from kubernetes import client

        name = f"t-{uuid.uuid4().hex[:8]}"
        core = client.CoreV1Api(self.api())
        core.create_namespace({"metadata": {"name": name}})
        # pods need their service account (no controller-manager creates "default")
        core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})
        return name


def install_crd(cluster: Cluster) -> None:
    from kubernetes import client

    ext = client.ApiextensionsV1Api(cluster.api())
    crd = yaml.safe_load((ROOT / "deploy" / "crd.yaml").read_text())
    ext.create_custom_resource_definition(crd)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = ext.read_custom_resource_definition(crd["metadata"]["name"])
        if any(c.type == "Established" and c.status == "True" for c in (got.status.conditions or [])):
            return
        time.sleep(0.1)
    pytest.fail("the Optimizer CRD was not established within 30 s")


def example_static() -> dict:
    """The static data of deploy/example.yaml's ConfigMap, as SystemData sections."""
    from inferno_mip.k8s.resource import configmap_sections

    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    return configmap_sections(cm["data"], "deploy/example.yaml")


def example_docs() -> list[dict]:
    return list(yaml.safe_load_all(EXAMPLE.read_text()))


def managed_deployment(api, namespace: str, name: str, *, server: str | None = None, model: str = "llama_13b",
                       service_class: str | None = "Premium", accelerator: str = "A100", max_batch: int = 64,
                       replicas: int = 1, rpm: float | None = 60.0, in_tokens: int | None = 128,
                       out_tokens: int | None = 1024, extra_labels: dict | None = None):
    """Create a Deployment labelled as inferno manages it; returns the created V1Deployment."""
    from kubernetes import client

    labels = {"inferno.server.managed": "true", "inferno.server.name": server or name,
              "inferno.server.model": model, "inferno.server.allocation.accelerator": accelerator,
              "inferno.server.allocation.maxbatchsize": str(max_batch), **(extra_labels or {})}
    if service_class is not None:
        labels["inferno.server.class"] = service_class
    for key, value in (("rpm", rpm), ("intokens", in_tokens), ("outtokens", out_tokens)):
        if value is not None:
            labels[f"inferno.server.load.{key}"] = str(value)
    body = {"metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "server", "image": "vllm:none"}]}}}}
    return client.AppsV1Api(api).create_namespaced_deployment(namespace, body)


class TcpProxy:
    """Forwards 127.0.0.1:port to the API server; ``down()`` drops every connection and refuses new ones."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.port = free_ports(1)
        self._up = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = None
        self.up()

    def up(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._up.set()
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def down(self) -> None:
        self._up.clear()
        try:  # wakes the accepting thread (close alone leaves it listening on Linux)
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        with self._lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while self._up.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            if not self._up.is_set():
                conn.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._conns += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def kubeconfig(self, cluster: Cluster, folder: Path) -> str:
        """A copy of the admin kubeconfig that goes through this proxy."""
        text = Path(cluster.kubeconfig()).read_text().replace(f"127.0.0.1:{cluster.port}", f"127.0.0.1:{self.port}")
        path = folder / f"proxy-{self.port}.kubeconfig"
        path.write_text(text)
        return str(path)


PROMETHEUS = shutil.which("prometheus")


class RunningPrometheus:
    """Debian's prometheus on 127.0.0.1 scraping one target every second; ``stop()`` ends it."""

    def __init__(self, folder: Path, target_port: int):
        import subprocess

        import httpx

        cfg = folder / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vllm\n    static_configs:\n"
                       f"      - targets: ['127.0.0.1:{target_port}']\n")
        self.port = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(folder / "prometheus.log", "wb")
        self._proc = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={folder / 'data'}",
                                       f"--web.listen-address=127.0.0.1:{self.port}"],
                                      stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        query = "min(count_over_time(vllm:request_success_total[8s]))"  # a 5 s window is then full
        while time.monotonic() < deadline and self._proc.poll() is None:
            try:
                result = httpx.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=1).json()
                samples = result["data"]["result"]
                if samples and float(samples[0]["value"][1]) >= 7:
                    return
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"prometheus did not scrape 7 samples in 8 s: {(folder / 'prometheus.log').read_text()[-2000:]}")

    def stop(self) -> None:
        import subprocess

        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._log.close()
