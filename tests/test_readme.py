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
    import importlib.util

    spec = importlib.util.spec_from_file_location("sync_readme", ROOT / "benchmarks" / "sync_readme.py")
    assert spec is not None and spec.loader is not None
    sync_readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync_readme)  # the script as it is, without putting benchmarks/ on sys.path

    text = "intro\n<!-- BEGIN main-job -->\nold\n<!-- END main-job -->\n<!-- BEGIN sst2 -->\n<!-- END sst2 -->\n" \
           "<!-- BEGIN sst2-krs -->\n<!-- END sst2-krs -->\n" \
           "<!-- BEGIN benchmarks -->\n<!-- END benchmarks -->\n<!-- BEGIN lm -->\n<!-- END lm -->\n" \
           "<!-- BEGIN vision -->\n<!-- END vision -->\n<!-- BEGIN recorded-teacher -->\n<!-- END recorded-teacher -->\nend\n"
    out = sync_readme.render(text, root=tmp_path)  # an empty tree: every section says how to measure it
    assert out.startswith("intro\n") and out.endswith("end\n") and "old" not in out
    assert "knowledge-retention reproduce-sst2 --scale cpu" in out and "python benchmarks/cka_scaling.py" in out
    assert "python -m knowledge_retention.lm_demo all" in out and "python benchmarks/recorded_teacher.py" in out
    assert "knowledge-retention reproduce-vision --scale cpu" in out
    assert sync_readme.render(out, root=tmp_path) == out


# --- no hand-typed measurements in the prose -----------------------------------------------------------

#: The sections whose prose was cleaned: any measured number there must sit in a synced block.
CLEANED_SECTIONS = ("The two commands", "Use it", "Performance", "Limitations")
_UNIT = r"(?:s|ms|sec|seconds?|min|minutes?|h|hours?|KB|kB|MB|MiB|GB|GiB|%|×|x)(?![A-Za-z])"
_NUMBER = r"(?<![\w.])\d[\d,]*(?:\.\d+)?"
_SPELLED = r"(?:one|two|three|four|five|six|seven|eight|nine|ten|a few|several)"
MEASURED = [
    re.compile(rf"{_NUMBER}(?:\s*[–-]\s*{_NUMBER})?\s*{_UNIT}"),  # 24.5 s, 0.95 GB, 1.15–1.2×, 2–4%
    re.compile(rf"(?i)\b(?:about|around|roughly|nearly|≈|~)\s*{_NUMBER}"),  # about 25
    re.compile(rf"(?i)\b{_SPELLED}\s+(?:seconds|minutes|hours)\b"),  # about two minutes
]


def _prose(section: str) -> str:
    """A README section without its synced blocks, fenced code and inline code."""
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"README lacks the section {section!r}"
    text = re.sub(r"<!-- BEGIN ([\w-]+) -->.*?<!-- END \1 -->", "", match.group(1), flags=re.S)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def typed_measurements(text: str) -> list[str]:
    return [m.group(0) for pattern in MEASURED for m in pattern.finditer(text)]


def test_the_pattern_catches_what_was_typed_by_hand():
    typed = ("a run takes about 25 s here (24.5 s, 0.95 GB peak RSS); About two minutes on 2 CPU cores; "
             "costs 1.15–1.2× the floor; 15× slower; 12.8 GB at 20,000; adds 2–4%; within 1.4–1.7×")
    assert typed_measurements(typed) == ["25 s", "24.5 s", "0.95 GB", "1.15–1.2×", "15×", "12.8 GB", "2–4%",
                                         "1.4–1.7×", "about 25", "two minutes"]
    assert typed_measurements("6 layers × 384, 2 CPU cores, float64, (0.3, 0.7), Python ≥ 3.10, fp16") == []


def test_no_typed_measurement_outside_synced_blocks():
    found = {section: typed_measurements(_prose(section)) for section in CLEANED_SECTIONS}
    assert not any(found.values()), f"hand-typed numbers (put them in a synced block or drop them): {found}"


def test_no_evaluation_suite_claim():
    # EvaluationSuite's evaluators call compute(predictions=, references=), which this metric does not take
    assert "EvaluationSuite" not in re.sub(r"`EvaluationSuite` does\s+not apply", "", README)
