"""A recorded teacher through the engine: `record_teacher` writes what the teacher's logits and hidden states say,
`evaluate_pair(folder, ...)` equals the live teacher at k = V and bounds it at k < V, mismatches are refused,
two processes record what one does, and the command line does both."""

from __future__ import annotations

import json
import math

import lm_fixtures as fx  # noqa: E402
import numpy as np
import pytest
import torch
from distributed import recording as launch  # noqa: E402  (the scenario of tests/distributed/launch.py)
from scipy.special import log_softmax

from knowledge_retention import InputError, InputTypeError, evaluate_pair, evaluate_students, record_teacher  # noqa: E402
from knowledge_retention.cli import main  # noqa: E402
from knowledge_retention.extraction.recorded import RecordedTeacher  # noqa: E402

KEYS = ("krs", "fss", "aoag", "mean_kl", "js", "top1_agreement", "topk_overlap", "logprob_gap", "teacher_perplexity",
        "student_perplexity")
TEXTS = fx.sentences(15, seed=5)


def _pair(family):
    if family == "llama":
        return (fx.tiny_llama(layers=3, seed=1), fx.tiny_llama(layers=2, seed=2),
                fx.tokenizer(bos=True, pad="<pad>", side="left"), fx.tokenizer(bos=True, pad="<pad2>", side="right"))
    tok = fx.tokenizer(bos=True, pad=None)
    return fx.tiny_gpt2(layers=3, seed=3), fx.tiny_gpt2(layers=2, seed=4), tok, tok


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def recorded(request, tmp_path_factory):
    """A pair, its recordings at k = V (every layer) and k = 5 (the final layer), and the live result."""
    teacher, student, t_tok, s_tok = _pair(request.param)
    root = tmp_path_factory.mktemp(f"rec-{request.param}")
    full = record_teacher(teacher, TEXTS, root / "full", top_k=None, layers="all", teacher_tokenizer=t_tok,
                          batch_size=4, progress=False)
    top5 = record_teacher(teacher, TEXTS, root / "top5", top_k=5, teacher_tokenizer=t_tok, batch_size=3, progress=False)
    live = evaluate_pair(teacher, student, TEXTS, teacher_tokenizer=t_tok, student_tokenizer=s_tok, layers="all",
                         batch_size=4, progress=False)
    return {"teacher": teacher, "student": student, "t_tok": t_tok, "s_tok": s_tok, "root": root, "full": full,
            "top5": top5, "live": live}


def _forward(teacher, tok):
    """Per text: its token ids, the teacher's log-softmax of every next-token prediction and its hidden states."""
    out = []
    for text in TEXTS:
        ids = tok(text)["input_ids"]
        with torch.no_grad():
            res = teacher(torch.tensor([ids]), output_hidden_states=True)
        out.append((ids, log_softmax(res.logits[0, :-1].double().numpy(), axis=1),
                    [h[0, :-1].numpy() for h in res.hidden_states]))
    return out


def _mean_tail(teacher, tok, k):
    tails = [1.0 - np.exp(np.sort(lt, axis=1)[:, -k:]).sum(1) for _, lt, _ in _forward(teacher, tok)]
    return float(np.concatenate(tails).mean())


def test_the_recording_is_the_teachers_logits_and_states(recorded):
    """Each counted token's top-k, tail, true-token log-prob and hidden states, from the model's own full forward pass."""
    teacher, tok = recorded["teacher"], recorded["t_tok"]
    reader = RecordedTeacher(recorded["root"] / "top5")
    assert reader.top_k == 5 and reader.layers == [3] and recorded["top5"]["num_examples"] == len(TEXTS)
    full = RecordedTeacher(recorded["root"] / "full")
    assert full.top_k == full.vocab_size == fx.vocab_size() and full.layers == [0, 1, 2, 3]
    tails = []
    for i, (ids, lt, states) in enumerate(_forward(teacher, tok)):
        y = np.asarray(ids[1:])
        want_ids = np.argsort(-lt, axis=1, kind="stable")[:, :5]
        got = reader.batch([i])
        np.testing.assert_array_equal(got.target, y)
        np.testing.assert_array_equal(got.position, np.arange(y.size))
        np.testing.assert_array_equal(got.topk_ids, want_ids)
        np.testing.assert_allclose(got.topk_logprobs, np.take_along_axis(lt, want_ids, 1), rtol=1e-5, atol=1e-5)
        tail = 1.0 - np.exp(np.take_along_axis(lt, want_ids, 1)).sum(1)
        np.testing.assert_allclose(np.exp(got.tail_logmass), tail, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(got.target_logprob, lt[np.arange(y.size), y], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got.hidden[3], states[3], rtol=1e-5, atol=1e-5)
        every = full.batch([i])
        for layer in range(4):
            np.testing.assert_allclose(every.hidden[layer], states[layer], rtol=1e-5, atol=1e-5)
        assert np.all(np.isneginf(every.tail_logmass))
        tails.append(tail)
    manifest = recorded["top5"]
    assert manifest["num_tokens"] == sum(t.size for t in tails)
    assert manifest["storage_bytes"] == sum((recorded["root"] / "top5" / p["file"]).stat().st_size for p in manifest["shards"])
    assert manifest["options"]["text_column"] == "sentence" and manifest["options"]["num_hidden_states"] == 4


def test_k_equal_to_v_scores_as_the_live_teacher(recorded):
    live = recorded["live"]
    got = evaluate_pair(str(recorded["root"] / "full"), recorded["student"], TEXTS, student_tokenizer=recorded["s_tok"],
                        layers="all", batch_size=5, progress=False)
    for key in KEYS:
        assert math.isclose(getattr(got, key), getattr(live, key), rel_tol=1e-6, abs_tol=1e-9), key
    np.testing.assert_allclose(got.cross_layer_cka, live.cross_layer_cka, rtol=1e-6)
    assert got.lm["num_tokens"] == live.lm["num_tokens"] and got.lm["by_position"]["count"] == live.lm["by_position"]["count"]
    info = got.options["recorded_teacher"]
    assert info["exact"] and info["top_k"] == info["vocab_size"] == fx.vocab_size() and info["mean_tail_mass"] == 0.0
    assert "equals the live teacher's" in got.notes[0] and got.lm["recorded_teacher"] == info
    assert got.timings["teacher_forward_s"] == 0.0  # the teacher was not run


def test_fewer_tokens_bound_the_live_teacher(recorded):
    live = evaluate_pair(recorded["teacher"], recorded["student"], TEXTS, teacher_tokenizer=recorded["t_tok"],
                         student_tokenizer=recorded["s_tok"], batch_size=4, progress=False, top_k=3)
    got = evaluate_pair(recorded["root"] / "top5", recorded["student"], TEXTS, student_tokenizer=recorded["s_tok"],
                        batch_size=4, progress=False, top_k=3)
    assert got.top1_agreement == live.top1_agreement and got.topk_overlap == live.topk_overlap  # exact
    assert got.aoag >= live.aoag and got.krs >= live.krs and got.mean_kl <= live.mean_kl and got.js <= live.js
    assert got.mean_kl < 0.999 * live.mean_kl  # a real gap at k = 5 of 46: the test can fail
    assert got.fss == pytest.approx(live.fss, rel=1e-6)
    for key in ("teacher_perplexity", "student_perplexity", "logprob_gap"):
        assert getattr(got, key) == pytest.approx(getattr(live, key), rel=1e-6), key
    info = got.options["recorded_teacher"]
    assert not info["exact"] and info["top_k"] == 5
    assert info["mean_tail_mass"] == pytest.approx(_mean_tail(recorded["teacher"], recorded["t_tok"], 5), rel=1e-5)
    assert "upper bound" in got.notes[0] and "top-5 of 46" in got.notes[0] and "tail mass" in got.notes[0]
    assert any("cross-layer" in note for note in got.notes) and got.cross_layer_cka is None
    beyond = evaluate_pair(recorded["root"] / "top5", recorded["student"], TEXTS, student_tokenizer=recorded["s_tok"],
                           progress=False, top_k=6)
    assert math.isnan(beyond.topk_overlap) and any("top-6 overlap" in note for note in beyond.notes)


def test_several_students_against_one_recording(recorded):
    other = fx.tiny_llama(layers=1, seed=9) if isinstance(recorded["student"], type(fx.tiny_llama())) else \
        fx.tiny_gpt2(layers=1, seed=9)
    folder = recorded["root"] / "full"
    both = evaluate_students(folder, {"a": recorded["student"], "b": other}, TEXTS, student_tokenizers=recorded["s_tok"],
                             layers="final", batch_size=4, progress=False)
    for name, model in (("a", recorded["student"]), ("b", other)):
        alone = evaluate_pair(folder, model, TEXTS, student_tokenizer=recorded["s_tok"], batch_size=6, progress=False)
        for key in KEYS:
            assert math.isclose(getattr(both[name], key), getattr(alone, key), rel_tol=1e-9, abs_tol=1e-12), (name, key)


def test_mismatches_are_refused_naming_the_teacher(recorded):
    student, s_tok, folder = recorded["student"], recorded["s_tok"], recorded["root"] / "top5"
    cases = [
        ({"dataset": TEXTS[:-1]}, "texts"),
        ({"max_length": 6}, "max_length=None there, 6 here"),
        ({"layers": "all"}, "layers"),
        ({"student_tokenizer": fx.tokenizer(bos=False, pad="<pad>")}, "counted tokens"),
        ({"sequence_pooling": "mean"}, "sequence_pooling"),
    ]
    for change, match in cases:
        kwargs = {"student_tokenizer": s_tok, "progress": False, **change}
        dataset = kwargs.pop("dataset", TEXTS)
        with pytest.raises(InputError, match=match) as err:
            evaluate_pair(folder, student, dataset, **kwargs)
        assert "`teacher`" in str(err.value), change
    wide = fx.tiny_llama(layers=1, seed=3, vocab=fx.vocab_size() + 1)
    with pytest.raises(InputError, match="`teacher`.*vocabulary"):
        evaluate_pair(folder, wide, TEXTS, student_tokenizer=fx.tokenizer(bos=True, pad="<pad>", extra=("zebra",)),
                      progress=False)
    for option, value in (("temperature", 2.0), ("generate", {"max_new_tokens": 2}), ("teacher_tokenizer", s_tok)):
        with pytest.raises(InputError, match=f"`{option}=.*recorded `teacher`"):
            evaluate_pair(folder, student, TEXTS, student_tokenizer=s_tok, progress=False, **{option: value})
    with pytest.raises(InputError, match="task='causal-lm'"):
        evaluate_pair(folder, student, TEXTS, student_tokenizer=s_tok, task="nlp", progress=False)


def test_sequence_pooling_and_prompts_replay_as_live(tmp_path):
    teacher, student, t_tok, s_tok = _pair("llama")
    data = {"sentence": TEXTS, "prompt": [f"the {w}" for w in ("film", "plot", "cast") * 5]}
    common = {"prompt_column": "prompt", "sequence_pooling": "mean", "batch_size": 4, "progress": False}
    other = {"sentence": TEXTS, "prompt": [f"a {w}" for w in ("film", "plot", "cast") * 5]}
    record_teacher(teacher, data, tmp_path / "rec", top_k=None, layers=[-1, 1], teacher_tokenizer=t_tok,
                   **{k: v for k, v in common.items() if k not in ("batch_size", "progress")})
    live = evaluate_pair(teacher, student, data, teacher_tokenizer=t_tok, student_tokenizer=s_tok,
                         layers=[(1, 1), (-1, -1)], **common)
    got = evaluate_pair(tmp_path / "rec", student, data, student_tokenizer=s_tok, layers=[(1, 1), (-1, -1)], **common)
    for key in KEYS:
        assert math.isclose(getattr(got, key), getattr(live, key), rel_tol=1e-6, abs_tol=1e-9), key
    assert got.lm["num_tokens"] == live.lm["num_tokens"]
    with pytest.raises(InputError, match="`teacher`.*other options: prompts="):  # other prompts: other teacher outputs
        evaluate_pair(tmp_path / "rec", student, other, student_tokenizer=s_tok, layers=[(1, 1), (-1, -1)], **common)


def test_record_teacher_refusals(tmp_path):
    teacher, _, t_tok, _ = _pair("gpt2")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x.txt").write_text("x")
    cases = [
        ({"out_dir": tmp_path / "used"}, InputError, "`out_dir`.*not an empty folder"),
        ({"top_k": fx.vocab_size() + 1}, InputError, "`top_k`.*exceeds"),
        ({"top_k": 0}, InputError, "`top_k`"),
        ({"layers": [7]}, InputError, r"`layers` \[7\] are out of range"),
        ({"layers": "uniform"}, InputError, "`layers`"),
        ({"logprob_dtype": "int8"}, InputError, "`logprob_dtype`"),
        ({"alpha": 0.5}, InputTypeError, "student-side option `alpha`"),
        ({"max_lenght": 5}, InputTypeError, "unknown option `max_lenght`"),
        ({"label_column": "label"}, InputTypeError, "`label_column`"),
    ]
    for change, error, match in cases:
        kwargs = {"out_dir": tmp_path / "new", "teacher_tokenizer": t_tok, "progress": False, "top_k": 5, **change}
        with pytest.raises(error, match=match):
            record_teacher(teacher, TEXTS, **kwargs)
    assert not (tmp_path / "new" / "manifest.json").exists()


@pytest.mark.slow
def test_two_processes_record_what_one_does(tmp_path, torchrun):
    ranks = torchrun("recording", tmp_path / "launch").ranks
    assert [r["num_processes"] for r in ranks] == [2, 2]  # every process returns the manifest
    (tmp_path / "launch" / "recording").rename(tmp_path / "two")
    one = launch.recording_case(tmp_path / "one")
    two = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert {p["rank"] for p in two["shards"]} == {0, 1} and two["options"]["num_processes"] == 2
    for key in ("num_examples", "num_tokens", "top_k", "vocab_size", "layers", "texts_fingerprint", "tokenizer"):
        assert two[key] == one[key], key
    a, b = RecordedTeacher(tmp_path / "one").batch(range(launch.N_TEXTS)), RecordedTeacher(tmp_path / "two").batch(
        range(launch.N_TEXTS))
    for name in ("example", "position", "target", "topk_ids"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)
    for name in ("topk_logprobs", "tail_logmass", "target_logprob"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-5, atol=1e-6, err_msg=name)
    for layer in a.hidden:
        np.testing.assert_allclose(b.hidden[layer], a.hidden[layer], rtol=1e-5, atol=1e-6)
    student, s_tok = fx.tiny_llama(layers=2, seed=2), fx.tokenizer(bos=True, pad="<pad2>")
    texts = fx.sentences(launch.N_TEXTS, seed=5)
    r1, r2 = (evaluate_pair(tmp_path / d, student, texts, student_tokenizer=s_tok, layers="all", progress=False)
              for d in ("one", "two"))
    for key in KEYS:
        assert math.isclose(getattr(r2, key), getattr(r1, key), rel_tol=1e-6, abs_tol=1e-9), key


# ------------------------------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tok = fx.tokenizer(bos=True, pad=None)
    for name, model in (("teacher", fx.tiny_gpt2(layers=2, seed=21)), ("student", fx.tiny_gpt2(layers=1, seed=22))):
        model.float().save_pretrained(root / name)
        tok.save_pretrained(root / name)
    (root / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return root


def test_cli_records_and_evaluates_without_the_teacher(saved, tmp_path, capsys):
    rec, out = tmp_path / "rec", tmp_path / "report"
    base = ["--dataset", str(saved / "texts.jsonl"), "--text-column", "text", "--quiet"]
    assert main(["record-teacher", "--teacher", str(saved / "teacher"), "--out-dir", str(rec), "--top-k", "8",
                 "--layers", "all", *base]) == 0
    assert "recorded" in capsys.readouterr().out
    manifest = json.loads((rec / "manifest.json").read_text())
    assert manifest["top_k"] == 8 and manifest["layers"] == [0, 1, 2]
    assert main(["evaluate", "--teacher", str(rec), "--student", str(saved / "student"), "--output-dir", str(out),
                 "--layers", "all", *base]) == 0
    report = json.loads((out / "report.json").read_text())
    direct = evaluate_pair(rec, str(saved / "student"), TEXTS, layers="all", progress=False)
    assert report["headline"]["krs"] == pytest.approx(direct.krs, rel=1e-9)
    live = evaluate_pair(str(saved / "teacher"), str(saved / "student"), TEXTS, layers="all", progress=False)
    assert direct.top1_agreement == live.top1_agreement and direct.aoag >= live.aoag


def test_cli_mistakes_exit_2_naming_the_flag_and_unloadable_models_exit_3(saved, tmp_path, capsys):
    base = ["record-teacher", "--dataset", str(saved / "texts.jsonl"), "--text-column", "text", "--quiet"]
    code = main([*base, "--teacher", str(saved / "teacher"), "--out-dir", str(tmp_path / "a"), "--top-k", "999"])
    assert code == 2 and "`--top-k`" in capsys.readouterr().err
    code = main([*base, "--teacher", str(saved / "teacher"), "--out-dir", str(saved), "--top-k", "4"])
    assert code == 2 and "`--out-dir`" in capsys.readouterr().err
    code = main([*base, "--teacher", str(saved / "teacher"), "--out-dir", str(tmp_path / "b"), "--layers", "x,y"])
    assert code == 2 and "--layers" in capsys.readouterr().err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    code = main([*base, "--teacher", str(tmp_path / "broken"), "--out-dir", str(tmp_path / "c")])
    assert code == 3 and "--teacher" in capsys.readouterr().err
