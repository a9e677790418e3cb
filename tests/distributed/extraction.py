"""Scenario ``extraction``: the tiny teacher/student pair of :mod:`text_fixtures` evaluated by 2
processes (one ``Accelerator(cpu=True)``, gloo) on datasets whose sizes do not divide by
batch_size x processes, for ``tests/test_extraction.py::test_two_processes_equal_one``, which runs
the same functions in one process and compares.
"""

from __future__ import annotations

from pathlib import Path

import text_fixtures as fx

from distributed import scenario

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


@scenario("extraction")
def main(out_dir: Path, argv: list[str]) -> dict:  # type: ignore[type-arg]
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    results = {name: run_case(n, bs, accelerator) for name, (n, bs) in CASES.items()}
    # distributed=True: evaluate_pair makes its own Accelerator (it joins the same process group)
    results["own_accelerator"] = run_case(*CASES["uneven"], distributed=True)
    # several students, one teacher pass; then recorded to and replayed from a shared on-disk teacher cache
    results["students"] = run_students(*STUDENTS_CASE, accelerator)
    cache = out_dir / "teacher_cache"
    results["students_recorded"] = run_students(*STUDENTS_CASE, accelerator, teacher_cache=cache)
    results["students_replayed"] = run_students(*STUDENTS_CASE, accelerator, teacher_cache=cache)
    accelerator.wait_for_everyone()
    return results
