"""Scenario ``recording``: the teacher of :func:`recording_case` recorded by 2 CPU processes into one folder
(each writes its shards, the main process the manifest), for
``tests/test_recorded_engine.py::test_two_processes_record_what_one_does``, which records the same in one process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lm_fixtures as fx

from distributed import scenario

N_TEXTS, BATCH_SIZE, TOP_K = 37, 4, 7  # 37 texts over 2 x 4 leave a last round of 5 real rows


def recording_case(out_dir: Path, accelerator: Any = None) -> dict[str, Any]:
    """The recording both sides of the test make (the manifest)."""
    from knowledge_retention.extraction import record_teacher

    return record_teacher(fx.tiny_llama(layers=3, seed=1), fx.sentences(N_TEXTS, seed=5), out_dir, top_k=TOP_K,
                          layers="all", teacher_tokenizer=fx.tokenizer(bos=True, pad="<pad>", side="left"),
                          batch_size=BATCH_SIZE, accelerator=accelerator, progress=False)


@scenario("recording")
def main(out_dir: Path, argv: list[str]) -> dict:  # type: ignore[type-arg]
    from accelerate import Accelerator

    manifest = recording_case(out_dir / "recording", Accelerator(cpu=True))
    return {"num_processes": manifest["options"]["num_processes"]}  # every process returns the manifest
