"""Scenario ``lm-extraction``: the tiny causal-LM pair of :mod:`lm_fixtures` evaluated by 2 processes
on 37 texts (batch 4) and 3 texts (process 1 gets only padding), for
``tests/test_lm_extraction.py::test_two_processes_equal_one``, which runs ``lm_fixtures.run_case`` in
one process and compares.
"""

from __future__ import annotations

from pathlib import Path

import lm_fixtures as fx

from distributed import scenario


@scenario("lm-extraction")
def main(out_dir: Path, argv: list[str]) -> dict:  # type: ignore[type-arg]
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    results = {name: fx.run_case(n, bs, accelerator) for name, (n, bs) in fx.CASES.items()}
    results["own_accelerator"] = fx.run_case(*fx.CASES["uneven"], distributed=True)
    accelerator.wait_for_everyone()
    return results
