"""`knowledge-retention evaluate --task causal-lm`: saved models loaded with from_pretrained, the LM report."""

from __future__ import annotations

import json

import lm_fixtures as fx
import pytest

from knowledge_retention.cli import main
from knowledge_retention.extraction import evaluate_pair


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    tok = fx.tokenizer(bos=True, pad=None)
    for name, model in (("teacher", fx.tiny_gpt2(layers=2, seed=21)), ("student", fx.tiny_gpt2(layers=1, seed=22))):
        model.float().save_pretrained(root / name)
        tok.save_pretrained(root / name)
    texts = fx.sentences(13, seed=9)
    (root / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return root, texts


def test_cli_writes_the_lm_report(saved, tmp_path, capsys):
    root, texts = saved
    out = tmp_path / "report"
    code = main(["evaluate", "--task", "causal-lm", "--teacher", str(root / "teacher"), "--student",
                 str(root / "student"), "--dataset", str(root / "texts.jsonl"), "--text-column", "text",
                 "--output-dir", str(out), "--quiet", "--layers", "all"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    # the same pair by paths through the library: the task is found from the configs (both causal LMs)
    direct = evaluate_pair(str(root / "teacher"), str(root / "student"), texts, layers="all", progress=False)
    assert direct.options["task"] == "causal-lm"
    assert report["headline"]["krs"] == pytest.approx(direct.krs, rel=1e-6)
    assert report["tokens"]["teacher_perplexity"] == pytest.approx(direct.teacher_perplexity, rel=1e-6)
    assert report["lm"]["num_tokens"] == direct.lm["num_tokens"]
    md = (out / "report.md").read_text()
    assert "Token-level agreement" in md and "Where the two disagree most" in md
    assert (out / "agreement_by_position.png").stat().st_size > 1000 and (out / "cross_layer_cka.png").exists()
    assert "top-1" in capsys.readouterr().out


def test_cli_generation_mode(saved, tmp_path):
    root, _ = saved
    out = tmp_path / "gen"
    code = main(["evaluate", "--task", "causal-lm", "--teacher", str(root / "teacher"), "--student",
                 str(root / "student"), "--dataset", str(root / "texts.jsonl"), "--text-column", "text",
                 "--output-dir", str(out), "--quiet", "--generate-tokens", "3"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["lm"]["mode"] == "generated" and report["lm"]["num_tokens"] <= 13 * 3
