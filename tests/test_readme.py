"""The README keeps its promises: the two commands exist and CI runs the same test command; the
measured tables in it are the ones the scripts wrote."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _make_recipe(target: str) -> list[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert match, f"Makefile has no {target!r} target"
    return [line.strip() for line in match.group(1).splitlines()]


def test_the_two_commands_are_make_targets_and_ci_runs_the_test_one():
    block = re.search(r"## The two commands.*?```bash\n(.*?)```", README, re.S)
    assert block, "README lacks the two commands"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    assert _make_recipe("demo") == ["knowledge-retention"]
    assert _make_recipe("test") == ["$(PYTHON) -m pytest -q"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, re.M)
    spelled_out = re.search(r"What they run.*?```bash\n(.*?)```", README, re.S)
    assert spelled_out and "python -m pytest -q" in spelled_out.group(1)
    assert "pip install torch==2.13.0" in spelled_out.group(1) and "TORCH ?= torch==2.13.0" in (ROOT / "Makefile").read_text()


def test_readme_tables_are_the_measured_ones():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sync_readme.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_sync_replaces_only_between_markers(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import sync_readme

    text = "intro\n<!-- BEGIN main-job -->\nold\n<!-- END main-job -->\n<!-- BEGIN sst2 -->\n<!-- END sst2 -->\n" \
           "<!-- BEGIN benchmarks -->\n<!-- END benchmarks -->\nend\n"
    out = sync_readme.render(text, root=tmp_path)  # an empty tree: every section says how to measure it
    assert out.startswith("intro\n") and out.endswith("end\n") and "old" not in out
    assert "knowledge-retention reproduce-sst2 --scale cpu" in out and "python benchmarks/cka_scaling.py" in out
    assert sync_readme.render(out, root=tmp_path) == out
