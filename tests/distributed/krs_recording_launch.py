"""Run by ``accelerate launch --num_processes 2`` from ``tests/test_recorded_engine.py``: the teacher of
:func:`recording_case` recorded by two CPU processes into one folder (each writes its shards, the main
process the manifest)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lm_fixtures as fx  # noqa: E402

N_TEXTS, BATCH_SIZE, TOP_K = 37, 4, 7  # 37 texts over 2 x 4 leave a last round of 5 real rows


def recording_case(out_dir: Path, accelerator: Any = None) -> dict[str, Any]:
    """The recording both sides of the test make (the manifest)."""
    from knowledge_retention.extraction import record_teacher

    return record_teacher(fx.tiny_llama(layers=3, seed=1), fx.sentences(N_TEXTS, seed=5), out_dir, top_k=TOP_K,
                          layers="all", teacher_tokenizer=fx.tokenizer(bos=True, pad="<pad>", side="left"),
                          batch_size=BATCH_SIZE, accelerator=accelerator, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    import torch
    from accelerate import Accelerator

    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    manifest = recording_case(Path(args.out_dir), accelerator)
    assert manifest["options"]["num_processes"] == 2  # every process returns the manifest


if __name__ == "__main__":
    main()
