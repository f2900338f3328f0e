"""Command-line flags for one replica's perf parameters, shared by the perf-model commands (`analyze`, `size`)
and the simulator's one-replica form, so the same command line works for both. Imports nothing of the project."""

from __future__ import annotations

import argparse


def add_perf_parameter_flags(group: argparse._ArgumentGroup) -> None:
    """--alpha/--beta/--gamma (perfParms) and --decode-*/--prefill-* (decode/prefill parameters), in ms."""
    group.add_argument("--alpha", type=float, help="per-iteration overhead (ms)")
    group.add_argument("--beta", type=float, help="compute time per token (ms)")
    group.add_argument("--gamma", type=float, help="time per context token read (ms)")
    group.add_argument("--decode-alpha", type=float, help="decode: ITL(B) = alpha + beta B (ms)")
    group.add_argument("--decode-beta", type=float)
    group.add_argument("--prefill-gamma", type=float, help="prefill: Pf(B) = gamma + delta n B (ms)")
    group.add_argument("--prefill-delta", type=float)
