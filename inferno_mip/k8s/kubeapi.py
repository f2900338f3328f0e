"""Talking to the API server: building a client, listing managed Deployments, one-line error messages.

Every call carries a request timeout, so an unreachable API server fails a cycle in seconds instead of hanging it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import yaml

from .labels import MANAGED_SELECTOR, ManagedDeployment, read_deployment

REQUEST_TIMEOUT = (3.0, 15.0)  # seconds: connect, read
RBAC_HINT = "grant it in the operator's Role (deploy/rbac.yaml)"


class KubeConfigError(RuntimeError):
    """No usable kubeconfig or in-cluster service account."""


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def in_cluster_wanted(kubeconfig: str | None, in_cluster: bool | None) -> bool:
    """Whether to use the pod's service account: asked for, or in a pod with no kubeconfig named."""
    if in_cluster is not None:
        return in_cluster
    return kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ


def api_client(kubeconfig: str | None = None, context: str | None = None, in_cluster: bool | None = None,
               service_account_dir: str = SERVICE_ACCOUNT_DIR):
    """A ``kubernetes.client.ApiClient`` from a kubeconfig file, or from the pod's service account.

    ``in_cluster=None`` picks the service account when running in a pod (``KUBERNETES_SERVICE_HOST`` set) and no
    kubeconfig was named, else ``kubeconfig`` / ``$KUBECONFIG`` / ``~/.kube/config``. The client's global default
    configuration is left untouched.
    """
    from kubernetes import client, config
    from kubernetes.config.incluster_config import InClusterConfigLoader

    in_cluster = in_cluster_wanted(kubeconfig, in_cluster)
    try:
        if in_cluster:
            configuration = client.Configuration()
            InClusterConfigLoader(token_filename=os.path.join(service_account_dir, "token"),
                                  cert_filename=os.path.join(service_account_dir, "ca.crt")).load_and_set(configuration)
            return client.ApiClient(configuration)
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except config.ConfigException as exc:
        where = f"in-cluster service account ({service_account_dir})" if in_cluster else (kubeconfig or os.environ.get("KUBECONFIG")
                                                                 or "~/.kube/config")
        raise KubeConfigError(f"{where}: {exc}") from None
    except OSError as exc:
        raise KubeConfigError(f"{kubeconfig}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise KubeConfigError(f"{kubeconfig}: not YAML: {' '.join(str(exc).split())}") from None
    except (TypeError, AttributeError, KeyError, ValueError) as exc:  # YAML, but not shaped like a kubeconfig
        raise KubeConfigError(f"{kubeconfig}: not a kubeconfig ({type(exc).__name__}: {exc})") from None


def describe(exc: BaseException, action: str) -> str:
    """One line for a failed API call: the action, the HTTP status and the server's message, or why it was unreachable."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        message = exc.reason or ""
        try:
            body = json.loads(exc.body or "{}")
            message = body.get("message") or message
        except (TypeError, ValueError):
            pass
        if exc.status == 403:
            return f"{action}: forbidden (HTTP 403): {message}; {RBAC_HINT}"
        if exc.status == 404:
            return f"{action}: not found (HTTP 404): {message}"
        return f"{action}: HTTP {exc.status}: {message}"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{action}: API server unreachable ({type(exc).__name__}: {text[:200]})"


def is_status(exc: BaseException, *codes: int) -> bool:
    from kubernetes.client.exceptions import ApiException

    return isinstance(exc, ApiException) and exc.status in codes


def api_errors() -> tuple[type[BaseException], ...]:
    """What a failed API call raises: HTTP errors and transport errors (refused, timed out, TLS)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    return (ApiException, HTTPError, OSError)


@dataclass(frozen=True)
class Listing:
    """Managed Deployments by server name, and why others were left out."""

    deployments: dict[str, ManagedDeployment]
    problems: tuple[str, ...]


def list_managed(api, namespace: str | None = None, selector: str = "") -> Listing:
    """Managed Deployments (``inferno.server.managed=true`` plus `selector`) in `namespace` (None: all).

    Raises what the client raises (see :func:`api_errors`). Two Deployments naming the same server: the first by
    (namespace, name) is kept, the other reported.
    """
    from kubernetes import client

    apps = client.AppsV1Api(api)
    full = ",".join(s for s in (MANAGED_SELECTOR, selector) if s)
    if namespace:
        items = apps.list_namespaced_deployment(namespace, label_selector=full, _request_timeout=REQUEST_TIMEOUT).items
    else:
        items = apps.list_deployment_for_all_namespaces(label_selector=full, _request_timeout=REQUEST_TIMEOUT).items
    found: dict[str, ManagedDeployment] = {}
    problems: list[str] = []
    for dep in sorted(items, key=lambda d: (d.metadata.namespace, d.metadata.name)):
        if dep.metadata.deletion_timestamp is not None:
            continue
        managed = read_deployment(dep)
        if isinstance(managed, str):
            problems.append(managed)
            continue
        problems.extend(managed.problems)
        if managed.server in found:
            problems.append(f"deployment {managed.ref}: server {managed.server!r} is already run by "
                            f"{found[managed.server].ref}, ignored")
            continue
        found[managed.server] = managed
    return Listing(found, tuple(problems))
