"""The full-scale plan of the SST-2 reproduction (``--dry-run``): what a GPU run would train, and whether the
Hub checkpoints it needs can be reached."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SST2_TRAIN_SENTENCES", "full_scale_plan", "render_plan"]

SST2_TRAIN_SENTENCES = 67349
"""Size of the GLUE SST-2 training split (the full scale's training set)."""

# Assumed seconds per optimizer step on one A100-class GPU, bf16, batch 32, dynamic padding (SST-2
# sentences are short): an assumption for the plan's estimate, not a measurement of this project.
_ASSUMED_STEP_SECONDS = {"teacher": 0.10, "student": 0.05, "teacher_forward": 0.02, "attention_targets": 0.03}


def _reachable(names: Sequence[str], *, timeout: float = 5.0) -> dict[str, str]:
    """For each Hub checkpoint: ``"cached"`` (its config.json is in the local cache), ``"hub"`` (the
    Hub answered) or ``"unreachable"``. The Hub is asked once, only when something is not cached."""
    status: dict[str, str] = {}
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers brings huggingface_hub
        return {name: "unreachable" for name in names}
    for name in names:
        cached = try_to_load_from_cache(name, "config.json")
        status[name] = "cached" if isinstance(cached, str) else "unknown"
    missing = [n for n, v in status.items() if v == "unknown"]
    if missing:
        online = False
        if os.environ.get("HF_HUB_OFFLINE", "").lower() not in {"1", "true", "yes", "on"}:
            try:
                from huggingface_hub import HfApi

                HfApi().model_info(missing[0], timeout=timeout)
                online = True
            except Exception:  # noqa: BLE001 - any failure means: not reachable from here
                online = False
        for name in missing:
            status[name] = "hub" if online else "unreachable"
    return status


def full_scale_plan(extra_seeds: Sequence[int] = (1, 2), *, check_hub: bool = True) -> dict[str, Any]:
    """What ``reproduce-sst2 --scale full`` would train: models, optimizer steps, a GPU-hour estimate
    (from assumed per-step costs, see ``assumed_step_seconds``) and which checkpoints are reachable.

    Args:
        extra_seeds: the seeds besides the scale's own.
        check_hub: look the checkpoints up (local cache, then the Hub once); False skips it.

    Returns:
        ``{"scale", "teacher", "students", "stages", "total_steps", "assumed_step_seconds",
        "gpu_hours_estimate", "checkpoints", "unreachable"}``.
    """
    import math

    from .scales import get_scale

    cfg = get_scale("full")
    n = cfg.teacher_train_size or SST2_TRAIN_SENTENCES
    per_epoch = math.ceil(n / cfg.batch_size)
    seeds = [cfg.seed, *[int(s) for s in extra_seeds if int(s) != cfg.seed]]
    cost = _ASSUMED_STEP_SECONDS
    stages: list[dict[str, Any]] = [{"stage": "teacher", "model": f"{cfg.teacher} fine-tuned", "steps": per_epoch * int(cfg.teacher_epochs),
               "seconds": per_epoch * cfg.teacher_epochs * cost["teacher"]}]
    students = []
    for spec in cfg.students:
        start = spec.checkpoint or (f"the fine-tuned teacher's {spec.num_layers} layers ({spec.init})"
                                    if spec.init_from == "teacher" else f"{cfg.teacher}'s {spec.num_layers} layers ({spec.init})")
        students.append({"name": spec.name, "start": start, "method": spec.method, "seeds": seeds if spec.all_seeds else seeds[:1]})
        runs = len(seeds) if spec.all_seeds else 1
        epoch_steps = per_epoch * int(spec.epochs or cfg.student_epochs)
        stages.append({"stage": f"{spec.name}-before x {runs}", "steps": runs * epoch_steps,
                       "seconds": runs * epoch_steps * cost["student"]})
        after = epoch_steps * (cost["student"] + (0.0 if cfg.cache_teacher else cost["teacher_forward"]))
        steps = epoch_steps
        if spec.method == "tinybert":
            inter = per_epoch * int(cfg.tinybert_intermediate_epochs)
            steps += inter
            after += inter * (cost["student"] + cost["teacher_forward"] + cost["attention_targets"])
        stages.append({"stage": f"{spec.name}-after x {runs}", "steps": runs * steps, "seconds": runs * after})
    total = sum(s["seconds"] for s in stages) + len(seeds) * per_epoch * cost["teacher_forward"]  # teacher caches
    names = [cfg.teacher, *[s.checkpoint for s in cfg.students if s.checkpoint]]
    checkpoints = _reachable(names) if check_hub else {name: "not checked" for name in names}
    return {
        "scale": "full", "teacher": f"{cfg.teacher}, {cfg.teacher_epochs:g} epochs, lr {cfg.teacher_lr:g}",
        "train_sentences": n, "batch_size": cfg.batch_size, "seeds": seeds, "students": students,
        "stages": [{**s, "seconds": round(s["seconds"])} for s in stages],
        "total_steps": sum(s["steps"] for s in stages), "assumed_step_seconds": dict(cost),
        "gpu_hours_estimate": round(total / 3600, 1), "checkpoints": checkpoints,
        "unreachable": [name for name, state in checkpoints.items() if state == "unreachable"],
    }


def render_plan(plan: Mapping[str, Any]) -> str:
    """The dry run's text: one line per stage, the estimate, and one line naming unreachable checkpoints."""
    lines = [f"reproduce-sst2 --scale full (dry run): teacher {plan['teacher']}; {plan['train_sentences']} "
             f"training sentences, batch {plan['batch_size']}; seeds {', '.join(map(str, plan['seeds']))}"]
    for student in plan["students"]:
        lines.append(f"  student {student['name']}: starts from {student['start']}; after = {student['method']}; "
                     f"seeds {', '.join(map(str, student['seeds']))}")
    for stage in plan["stages"]:
        lines.append(f"  {stage['stage']}: {stage['steps']} steps, ~{stage['seconds'] / 3600:.2f} GPU-hours")
    assumed = ", ".join(f"{k} {v:g} s" for k, v in plan["assumed_step_seconds"].items())
    lines.append(f"  total: {plan['total_steps']} optimizer steps, about {plan['gpu_hours_estimate']} GPU-hours "
                 f"(assumed per-step costs on one A100-class GPU: {assumed})")
    if plan["unreachable"]:
        lines.append(f"offline: cannot reach {', '.join(plan['unreachable'])} (not in the local Hugging Face cache "
                     "and the Hub did not answer); the full scale needs them")
    else:
        lines.append("checkpoints: " + ", ".join(f"{k} ({v})" for k, v in plan["checkpoints"].items()))
    return "\n".join(lines)
