"""Scenario ``cli``: the command line itself in every process (``knowledge_retention.cli.main`` with the
arguments after ``--``), for ``tests/test_cli.py::test_evaluate_under_torchrun_shards_and_writes_one_report``.
A non-zero exit code ends the process with it, as ``python -m knowledge_retention.cli`` would.
"""

from __future__ import annotations

from pathlib import Path

from distributed import scenario


@scenario("cli")
def main(out_dir: Path, argv: list[str]) -> dict:  # type: ignore[type-arg]
    from knowledge_retention.cli import main as cli_main

    code = cli_main(argv)
    if code:
        raise SystemExit(code)
    return {"exit_code": code}
