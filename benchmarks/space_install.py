"""How long the exported Space's requirements take to install on this machine, in a fresh virtual environment.

Writes ``benchmarks/results/space_install.json``:

* ``install_s``: wall seconds of ``pip install -r requirements.txt`` (what ``knowledge-retention export-space``
  writes) in a new ``python -m venv``;
* ``resolve_s``: wall seconds of ``pip install --dry-run`` of the same file (resolution and downloads only);
* ``resolve_with_extra_index_s`` (``--with-old``): the same with the former ``--extra-index-url`` of PyTorch's
  CPU index and ``torch==X+cpu``, and the number of pip's retries against that index (on a machine that
  reaches only PyPI, pip retries every package five times there).

Run: ``python benchmarks/space_install.py [--with-old]`` (minutes: it installs torch, transformers and gradio).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "spaces_app"))  # export-space's builder is a checkout's tool (spaces_app/space_export.py)

from space_export import _CPU_INDEX, space_requirements  # noqa: E402


def _timed_pip(python: Path, args: list[str], log: Path) -> tuple[float, int, int]:
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run([str(python), "-m", "pip", *args], stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    retries = log.read_text(errors="replace").count("Retrying (Retry(")
    return round(seconds, 1), code, retries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-old", action="store_true", help="also resolve the former requirements (extra index)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "space_install.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        new = work / "requirements.txt"
        new.write_text(space_requirements())
        subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
        python = work / "venv" / "bin" / "python"
        out: dict[str, object] = {"machine": platform.platform(), "python": platform.python_version()}
        out["resolve_s"], out["resolve_rc"], out["resolve_retries"] = _timed_pip(
            python, ["install", "--dry-run", "--ignore-installed", "-r", str(new)], work / "resolve.log")
        if args.with_old:
            text = space_requirements()
            torch_pin = next(line for line in text.splitlines() if line.startswith("torch=="))
            old = work / "requirements_old.txt"
            old.write_text(text.replace(torch_pin, f"{torch_pin}+cpu") + f"--extra-index-url {_CPU_INDEX}\n")
            (out["resolve_with_extra_index_s"], out["resolve_with_extra_index_rc"],
             out["resolve_with_extra_index_retries"]) = _timed_pip(
                python, ["install", "--dry-run", "--ignore-installed", "-r", str(old)], work / "resolve_old.log")
        out["install_s"], out["install_rc"], out["install_retries"] = _timed_pip(
            python, ["install", "-r", str(new)], work / "install.log")
        check = subprocess.run([str(python), "-c", "import torch, transformers, gradio; print(torch.__version__)"],
                               capture_output=True, text=True)
        out["torch_installed"] = check.stdout.strip() or check.stderr.strip()[-200:]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
