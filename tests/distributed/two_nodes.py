"""Scenario ``two-nodes``: started with ``nnodes=2`` (two torchrun agents of one process each, a static
rendezvous on 127.0.0.1) by ``tests/test_two_nodes.py``; a classifier pair and a causal-LM pair, each
through ``evaluate_pair(..., distributed=True)``, which joins the process group torchrun describes.
"""

from __future__ import annotations

import os
from pathlib import Path

import lm_fixtures as lm

from distributed import extraction, scenario


def run_nodes() -> dict:  # type: ignore[type-arg]
    """A classifier pair and a causal-LM pair, each through ``evaluate_pair(..., distributed=True)``."""
    return {"classifier": extraction.run_case(*extraction.CASES["uneven"], distributed=True),
            "causal_lm": lm.run_case(*lm.CASES["uneven"], distributed=True)}


@scenario("two-nodes")
def main(out_dir: Path, argv: list[str]) -> dict:  # type: ignore[type-arg]
    return {**run_nodes(), "node_rank": int(os.environ.get("GROUP_RANK", -1)), "world_size": int(os.environ["WORLD_SIZE"])}
