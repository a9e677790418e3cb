"""The causal-LM demonstration end to end at toy size: tokenizer, teacher, both students, evaluation, report."""

from __future__ import annotations

import json

import pytest

from knowledge_retention.distillation.data import find_sst2_dir
from knowledge_retention.lm_demo import evaluate_demo, train_demo

pytestmark = pytest.mark.skipif(find_sst2_dir() is None, reason="SST-2 TSV files not available")


def test_demo_trains_and_scores_both_students(tmp_path):
    record = train_demo(tmp_path, vocab_size=300, width=32, teacher_layers=2, teacher_steps=3, student_steps=3,
                        batch_size=8, max_train=300)
    assert record["student_layers"] == 1 and record["student_before"]["steps"] == 3
    for name in ("teacher", "student_before", "student_after", "student_init", "tokenizer"):
        assert (tmp_path / "checkpoints" / name).is_dir()
    out = evaluate_demo(tmp_path, batch_size=8, generate_tokens=3, max_dev=12)
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["before"]["teacher_forced"]["krs"] == pytest.approx(out["before"]["teacher_forced"]["krs"])
    for name in ("before", "after"):
        forced, gen = out[name]["teacher_forced"], out[name]["generated"]
        assert forced["options"]["task"] == "causal-lm" and gen["lm"]["mode"] == "generated"
        assert 0 < gen["lm"]["num_tokens"] <= 12 * 3
        assert (tmp_path / f"report_{name}" / "agreement_by_position.png").is_file()
    table = (tmp_path / "demo.md").read_text()
    assert "| top-1 agreement |" in table and "greedy teacher continuations" in table
    rec = saved["recorded_teacher"]  # the teacher recorded (top-128 of 300) and both students scored against it
    assert rec["top_k"] == 128 and rec["num_tokens"] == out["before"]["teacher_forced"]["lm"]["num_tokens"]
    for name in ("before", "after"):
        live = out[name]["teacher_forced"]
        assert rec[name]["top1_agreement"] == live["top1_agreement"] and rec[name]["aoag"] >= live["aoag"]
    assert "**recorded teacher**" in table
