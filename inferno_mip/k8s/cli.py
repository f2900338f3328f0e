"""CLI subcommand ``operator``: reconcile Optimizer resources against a cluster.

The main CLI calls :func:`register` with its argparse subparsers. Errors print one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

EXIT_BAD_INPUT = 2
EXIT_HELD = 1


def register(subparsers) -> None:
    p = subparsers.add_parser("operator", help="run the Kubernetes operator: reconcile Optimizer resources, "
                                               "scale and relabel the managed Deployments")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account inside a pod, "
                                        "else $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument("--in-cluster", action="store_true", default=None, help="use the pod's service account")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", help="namespace of the Optimizer resources (default: the "
                                                 "kubeconfig context's, else 'default')")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="Optimizers of every namespace")
    p.add_argument("--once", action="store_true", help="reconcile every Optimizer once, print the results as "
                                                       "JSON and exit (1 if a cycle held)")
    p.add_argument("--dry-run", action="store_true", help="print the patches instead of applying them")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(run=run_operator)


def run_operator(args: argparse.Namespace) -> int:
    logger = logging.getLogger("inferno_mip.k8s")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(args.log_level.upper())
    try:
        return _run(args)
    finally:  # the command's logging ends with it
        logger.removeHandler(handler)
        logger.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    from .kubeapi import KubeConfigError, api_client, api_errors, describe
    from .operator import Operator

    try:
        api = api_client(args.kubeconfig, args.context, args.in_cluster)
    except KubeConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    namespace = None if args.all_namespaces else (args.namespace or _default_namespace(args))
    operator = Operator(api, namespace, dry_run=args.dry_run, out=sys.stdout)
    if args.once:
        try:
            results = operator.run_once()
        except api_errors() as exc:
            print(f"error: {describe(exc, 'list optimizers')}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(json.dumps({f"{ns}/{name}": _result_dict(r) for (ns, name), r in results.items()}, indent=2))
        return 0 if all(r is not None and r.ok for r in results.values()) else EXIT_HELD
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("inferno_mip.k8s").info("operator watching optimizers in %s", namespace or "all namespaces")
    operator.run(stop)
    return 0


def _default_namespace(args: argparse.Namespace) -> str:
    """The pod's own namespace in a cluster, else the kubeconfig context's, else "default"."""
    from kubernetes import config

    from .kubeapi import SERVICE_ACCOUNT_DIR, in_cluster_wanted

    if in_cluster_wanted(args.kubeconfig, args.in_cluster):
        try:
            with open(os.path.join(SERVICE_ACCOUNT_DIR, "namespace"), encoding="utf-8") as f:
                return f.read().strip() or "default"
        except OSError:
            return "default"
    try:
        contexts, current = config.list_kube_config_contexts(config_file=args.kubeconfig)
    except (config.ConfigException, OSError, TypeError):
        return "default"
    context = next((c for c in contexts if c["name"] == args.context), current) if args.context else current
    return ((context or {}).get("context") or {}).get("namespace") or "default"


def _result_dict(result) -> dict | None:
    if result is None:
        return None
    return {"phase": result.phase, "message": result.message, "solver": result.solver,
            "solveStatus": result.solve_status, "totalCost": result.total_cost,
            "servers": {s.name: {"status": s.status, "reason": s.reason, "action": s.action,
                                 "target": None if s.target is None else
                                 {"accelerator": s.target.accelerator, "replicas": s.target.replicas,
                                  "maxBatch": s.target.max_batch}} for s in result.servers},
            "problems": list(result.problems)}
