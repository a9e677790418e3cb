"""Fixtures shared by the whole suite.

- ``smoke_run``: the smoke-scale SST-2 reproduction, trained and evaluated once per session.
- ``torchrun``: starts a scenario of ``tests/distributed`` in several CPU processes (the one launcher).
- ``sst2_dev``: the SST-2 ``dev.tsv`` of ``$SST2_DIR`` or ``../shared/data/sst2`` (may be absent).

Helper modules sit beside this file and are imported by name (``import text_fixtures as fx``,
``import lm_fixtures as fx``, ``from distributed import extraction``): pytest puts the folder of this
conftest (which has no ``__init__.py``) on ``sys.path`` before any test module is imported, so no test
edits ``sys.path`` itself. The repository-wide settings (offline, no GPU UI) are in ``../conftest.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture(scope="session")
def sst2_dev() -> Path:
    """The GLUE SST-2 ``dev.tsv`` the tests may read (``$SST2_DIR``, else ``<repo>/../shared/data/sst2``)."""
    import text_fixtures

    return text_fixtures.sst2_dev()


# --- the smoke reproduction, once per session ----------------------------------------------------------


@dataclass(frozen=True)
class SmokeRun:
    """One smoke-scale ``reproduce_sst2`` run (training included), shared by every test that needs one.

    Read it, never write into it: a test that changes files copies the run first (:meth:`copy`).
    """

    out: Path
    """``reproduce_sst2``'s output folder: ``results.json``, ``table.md``, figures, ``models/``."""
    results: dict[str, Any]
    """What ``reproduce_sst2`` returned."""
    training: dict[str, Any]
    """What ``train_pipeline`` returned inside that call (the manifest, with ``"evaluation"``)."""
    evaluate_calls: list[Path] = field(default_factory=list)
    """The paths ``train_pipeline`` passed to its ``evaluate_fn`` (which returned ``"ok"``)."""

    @property
    def work(self) -> Path:
        """The checkpoints: the teacher, ``general/``, ``students/`` and ``manifest.json``."""
        return self.out / "checkpoints"

    def copy(self, dest: Path) -> Path:
        """A private copy of the whole run folder at ``dest`` (for tests that modify it)."""
        shutil.copytree(self.out, dest)
        return dest


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> SmokeRun:
    """``reproduce_sst2("smoke", out, bootstrap=50, measure_speed=False)``: the real pipeline once.

    Its ``train_pipeline`` call also gets an ``evaluate_fn`` (recording the manifest path, returning
    ``"ok"``) and its return value is kept, so the training checks of ``tests/distillation`` read this
    same run; ``reproduce_sst2`` reloads the manifest from disk and ignores both.
    """
    from knowledge_retention.distillation import sst2
    from knowledge_retention.distillation.reproduce import reproduce_sst2

    out = tmp_path_factory.mktemp("sst2-smoke")
    calls: list[Path] = []
    training: dict[str, Any] = {}
    train_pipeline = sst2.train_pipeline

    def recorded(*args: Any, **kwargs: Any) -> dict[str, Any]:
        training.update(train_pipeline(*args, evaluate_fn=lambda p: calls.append(p) or "ok", **kwargs))
        return training

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sst2, "train_pipeline", recorded)
        results = reproduce_sst2("smoke", out, bootstrap=50, measure_speed=False, progress=False)
    assert training and calls, "reproduce_sst2 no longer trains through distillation.sst2.train_pipeline"
    return SmokeRun(out, results, training, calls)


# --- several processes: one launcher --------------------------------------------------------------------


@dataclass(frozen=True)
class Launched:
    """What a multi-process run left: the scenario's return value in every process, and the output."""

    ranks: list[Any]
    """What each process's scenario returned, by global rank (None where it returned nothing)."""
    stdout: str
    stderr: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_scenario(scenario: str, out_dir: Path, *args: str, nproc: int = 2, nnodes: int = 1,
                    timeout: float = 300) -> Launched:
    """Runs ``tests/distributed/launch.py SCENARIO`` in ``nproc`` CPU processes (torchrun, gloo).

    Args:
        scenario: a name registered with :func:`distributed.scenario`.
        out_dir: the scenario's folder (``<out_dir>/rank<k>.json`` are read back).
        *args: passed to the scenario function.
        nproc: processes in all.
        nnodes: torchrun agents, each starting ``nproc // nnodes`` processes and meeting on
            localhost as separate machines would (``--nnodes``, ``--node_rank``, static rendezvous).
        timeout: seconds before every process is killed and the test fails.

    Returns:
        :class:`Launched`; fails the test (with the end of the output) when a process fails.
    """
    if nnodes < 1 or nproc % nnodes:
        raise ValueError(f"`nproc` ({nproc}) must be a multiple of `nnodes` ({nnodes})")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("rank*.json"):
        stale.unlink()
    env = os.environ | {
        "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    common = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}",
              f"--nproc_per_node={nproc // nnodes}", "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    script = ["-m", "distributed.launch", scenario, "--out-dir", str(out_dir), "--", *args]
    logs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in range(nnodes)]
    agents = [subprocess.Popen([*common, f"--node_rank={k}", *script], env=env, cwd=REPO, stdout=out, stderr=err,
                               text=True, start_new_session=True) for k, (out, err) in enumerate(logs)]
    try:
        codes = [agent.wait(timeout=timeout) for agent in agents]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for agent in agents:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()
    texts = []
    for out, err in logs:
        out.seek(0), err.seek(0)
        texts.append((out.read(), err.read()))
        out.close(), err.close()
    stdout, stderr = "".join(t[0] for t in texts), "".join(t[1] for t in texts)
    tail = stdout[-3000:] + stderr[-3000:]
    assert codes is not None, f"{scenario}: still running after {timeout} s\n{tail}"
    assert codes == [0] * nnodes, f"{scenario}: exit codes {codes}\n{tail}"
    missing = [k for k in range(nproc) if not (out_dir / f"rank{k}.json").is_file()]
    assert not missing, f"{scenario}: no result from rank(s) {missing}\n{tail}"
    ranks = [json.loads((out_dir / f"rank{k}.json").read_text(encoding="utf-8")) for k in range(nproc)]
    return Launched(ranks, stdout, stderr)


@pytest.fixture(scope="session")
def torchrun() -> Any:
    """:func:`launch_scenario`: ``torchrun("extraction", tmp_path).ranks`` (see ``tests/distributed``)."""
    return launch_scenario
