"""Run by ``accelerate launch --cpu --num_processes 2`` from ``tests/test_extraction.py``, and with ``--nodes``
by ``torchrun --nnodes 2 --nproc-per-node 1`` (two "nodes" on this machine) from ``tests/test_two_nodes.py``.

Evaluates the tiny teacher/student pair of ``krs_extraction_fixtures`` on datasets whose sizes do
not divide by batch_size x processes, and writes every process's result to
``<out_dir>/rank<k>.json`` so the test can compare them with a single-process run. With ``--nodes``
only :func:`run_nodes` runs: a classifier pair and a causal-LM pair through
``evaluate_pair(..., distributed=True)``, which joins the process group torchrun describes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import krs_extraction_fixtures as fx  # noqa: E402

# name -> (number of examples, batch size): 37 over 2 x 4 leaves a last round with 5 real rows;
# 3 over 2 x 4 gives process 1 nothing but padding.
CASES = {"uneven": (37, 4), "tiny": (3, 4)}


def run_case(n: int, batch_size: int, accelerator=None, distributed: bool = False) -> dict:  # type: ignore[no-untyped-def]
    """The evaluation both the distributed and the single-process side run, as a JSON-safe dict."""
    from knowledge_retention.extraction import evaluate_pair

    texts = fx.sentences(n, seed=3)
    dataset = {"sentence": texts, "label": [i % 2 for i in range(n)]}
    result = evaluate_pair(
        fx.tiny_bert(), fx.tiny_distilbert(), dataset,
        teacher_tokenizer=fx.bert_tokenizer(), student_tokenizer=fx.bert_tokenizer(),
        label_column="label", layers="uniform", pooling="mean", batch_size=batch_size,
        keep_arrays=True, accelerator=accelerator, distributed=distributed, progress=False,
    )
    out = result.to_dict(include_arrays=True)
    out["num_processes"] = result.options["num_processes"]
    return out


STUDENTS_CASE = (37, 4)


def students() -> dict:  # type: ignore[type-arg]
    return {"distil": fx.tiny_distilbert(), "bert2": fx.tiny_bert(num_layers=2, hidden=32, seed=5)}


def run_students(n: int, batch_size: int, accelerator=None, teacher_cache=None) -> dict:  # type: ignore[no-untyped-def]
    """evaluate_students over two students (one teacher pass), as JSON-safe dicts per student."""
    from knowledge_retention.extraction import evaluate_students

    texts = fx.sentences(n, seed=3)
    dataset = {"sentence": texts, "label": [i % 2 for i in range(n)]}
    results = evaluate_students(
        fx.tiny_bert(), students(), dataset, teacher_tokenizer=fx.bert_tokenizer(),
        student_tokenizers=fx.bert_tokenizer(), label_column="label", layers="uniform", pooling="mean",
        batch_size=batch_size, keep_arrays=True, accelerator=accelerator, teacher_cache=teacher_cache, progress=False,
    )
    out = {}
    for name, result in results.items():
        out[name] = result.to_dict(include_arrays=True)
        out[name]["num_processes"] = result.options["num_processes"]
        out[name]["teacher_cache"] = result.options["teacher_cache"]
    return out


def run_nodes() -> dict:  # type: ignore[type-arg]
    """A classifier pair and a causal-LM pair, each through ``evaluate_pair(..., distributed=True)``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import lm_fixtures as lm

    return {"classifier": run_case(*CASES["uneven"], distributed=True),
            "causal_lm": lm.run_case(*lm.CASES["uneven"], distributed=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--nodes", action="store_true", help="only the two-node cases (run_nodes)")
    args = parser.parse_args()
    import torch
    from accelerate import Accelerator

    torch.set_num_threads(1)
    if args.nodes:
        import os

        results = run_nodes()
        (Path(args.out_dir) / f"rank{os.environ['RANK']}.json").write_text(json.dumps(
            {**results, "node_rank": int(os.environ.get("GROUP_RANK", -1)), "world_size": int(os.environ["WORLD_SIZE"])}))
        return
    accelerator = Accelerator(cpu=True)
    results = {name: run_case(n, bs, accelerator) for name, (n, bs) in CASES.items()}
    # distributed=True: evaluate_pair makes its own Accelerator (it joins the same process group)
    results["own_accelerator"] = run_case(*CASES["uneven"], distributed=True)
    # several students, one teacher pass; then recorded to and replayed from a shared on-disk teacher cache
    results["students"] = run_students(*STUDENTS_CASE, accelerator)
    cache = Path(args.out_dir) / "teacher_cache"
    results["students_recorded"] = run_students(*STUDENTS_CASE, accelerator, teacher_cache=cache)
    results["students_replayed"] = run_students(*STUDENTS_CASE, accelerator, teacher_cache=cache)
    path = Path(args.out_dir) / f"rank{accelerator.process_index}.json"
    path.write_text(json.dumps(results))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
