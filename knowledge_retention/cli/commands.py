"""The subcommands: the main job, ``evaluate``, ``arrays``, the reproductions and the exports."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._validation import InputError, LoadError
from .parser import EXIT_OK, UserError
from .run import _SST2_FILES, _SST2_HINT, _load_dataset, _run_report


def _hub_unreachable() -> str | None:
    """Why the Hub cannot serve the main job's data or models now (offline mode set, or no connection), or None."""
    from ..extraction.inputs import hub_unreachable

    return hub_unreachable(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _default_pair_missing() -> bool:
    """Whether the main job must first train the default pair (and so needs train.tsv)."""
    from ..distillation import defaults

    return not defaults._complete(defaults.default_pair_dir())


def _main_job_sst2_dir(flag: Path | None) -> Path | None:
    """The SST-2 folder of the main job, checked before anything runs; None: the Hub's glue/sst2.

    Raises:
        UserError: ``--sst2-dir`` / ``$SST2_DIR`` is not a folder or lacks a file the run needs.
        LoadError: no local SST-2 data and the Hub offline or unreachable (no 30 s of retries).
    """
    env = os.environ.get("SST2_DIR") or None
    source, value = ("--sst2-dir", flag) if flag is not None else ("SST2_DIR", env)
    if value is not None and not Path(value).expanduser().is_dir():
        raise UserError(f"{source} {value}: no such folder; it must hold {_SST2_FILES}")
    needed = ["dev.tsv"] + (["train.tsv"] if _default_pair_missing() else [])
    if value is not None:
        folder = Path(value).expanduser()
        missing = [name for name in needed if not (folder / name).is_file()]
        if missing:
            raise UserError(f"{source} {value}: no {' and no '.join(missing)} in that folder; it must hold {_SST2_FILES}")
        return folder
    from ..distillation.data import default_sst2_dir

    shared = default_sst2_dir()
    if shared.is_dir() and all((shared / name).is_file() for name in needed):
        return shared
    reason = _hub_unreachable()
    if reason is not None:
        raise LoadError(f"no SST-2 data found and the Hub cannot be used ({reason}); {_SST2_HINT}")
    return None


def cmd_default(args: argparse.Namespace) -> int:
    sst2_dir = _main_job_sst2_dir(args.sst2_dir)  # before torch is imported: a wrong folder is refused at once
    from ..distillation.data import load_sst2
    from ..distillation.defaults import ensure_default_pair

    print("Main job: an SST-2 teacher (all-MiniLM-L6-v2 fine-tuned) vs its 3-layer distilled student, on SST-2 dev;\n"
          "baseline: the same 3-layer student fine-tuned on the labels only (was distillation worth it?).")
    # The first run's training reads train.tsv through $SST2_DIR: set it for that call only, so an
    # in-process caller's environment is left as it was.
    previous = os.environ.get("SST2_DIR")
    if sst2_dir is not None:
        os.environ["SST2_DIR"] = str(sst2_dir)
    try:
        pair = ensure_default_pair(progress=not args.quiet)
    finally:
        if previous is None:
            os.environ.pop("SST2_DIR", None)
        else:
            os.environ["SST2_DIR"] = previous
    try:
        dev = load_sst2("validation", data_dir=sst2_dir)
    except ValueError as err:
        raise LoadError(str(err)) from None
    extraction: dict[str, Any] = {"layers": "final", "pooling": "cls", "batch_size": 32,
                                  "teacher_cache": Path(pair["teacher"]).parents[2] / "teacher_outputs"}
    if args.max_examples:
        extraction["max_examples"] = args.max_examples
    _run_report(pair["teacher"], pair["student"], dev, args=args, baseline=pair.get("baseline"),
                extraction=extraction, scoring={"task": "nlp"})
    return EXIT_OK


def _students_arg(values: Sequence[str]) -> dict[str, str]:
    """``--student [NAME=]MODEL`` (repeated) as ``{name: model}``; a name defaults to the folder's name."""
    students: dict[str, str] = {}
    for value in values:
        name, sep, model = value.partition("=")
        if not sep or not name or "/" in name or os.sep in name:
            name, model = Path(value.rstrip("/")).name or value, value
        if name in students or name == "baseline":
            raise UserError(f"--student {value}: the name {name!r} is taken; name each student with NAME=MODEL")
        students[name] = model
    return students


#: Flags of `evaluate` that a task does not use, refused when given (the engine refuses the others it cannot use).
_NOT_FOR_TASK = {"causal-lm": {"pooling": "every counted token is a row of the CKA (no pooling)"}}


def _refuse_flags(args: argparse.Namespace) -> None:
    for name, why in _NOT_FOR_TASK.get(args.task, {}).items():
        value = getattr(args, name, None)
        if value is not None:
            raise InputError(f"--{name.replace('_', '-')} {value}: not used by --task {args.task} ({why}); leave it unset")


def cmd_evaluate(args: argparse.Namespace) -> int:
    _refuse_flags(args)
    _students_arg(args.student)  # names checked before the data loads
    if args.image_column is not None:
        dataset = _load_images(args)
    else:
        dataset = _load_dataset(args.dataset, args.split, args.dataset_config)
    evaluate_dataset(args, dataset)
    return EXIT_OK


def _teacher_load_kwargs(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--teacher-device-map``, ``--max-memory``, ``--offload-folder`` as ``from_pretrained`` keyword arguments."""
    if args.teacher_device_map is None:
        for flag, value in (("--max-memory", args.max_memory), ("--offload-folder", args.offload_folder)):
            if value is not None:
                raise UserError(f"{flag} applies with --teacher-device-map (accelerate's big-model inference); "
                                "add --teacher-device-map auto or leave it out")
        return None
    kwargs: dict[str, Any] = {"device_map": args.teacher_device_map}
    if args.max_memory is not None:
        kwargs["max_memory"] = args.max_memory
    if args.offload_folder is not None:
        kwargs["offload_folder"] = str(args.offload_folder)
    return kwargs


def evaluate_dataset(args: argparse.Namespace, dataset: Any) -> dict[str, Any]:
    """``evaluate`` on a loaded dataset: every task's one path (the report dict; ``{}`` off the main process)."""
    from ..extraction.tasks.recorded import is_recording

    if is_recording(args.teacher):  # a record-teacher folder: a causal-LM teacher, replayed
        args.task = "causal-lm"
    _refuse_flags(args)
    students = _students_arg(args.student)
    extraction = {
        "layers": args.layers, "pooling": args.pooling or "cls", "batch_size": args.batch_size,
        "max_examples": args.max_examples, "max_length": args.max_length,
        "mixed_precision": None if args.mixed_precision == "no" else args.mixed_precision,
        "trust_remote_code": args.trust_remote_code, "teacher_cache": args.teacher_cache,
        "teacher_load_kwargs": _teacher_load_kwargs(args),
    }
    if args.image_column is not None:  # image models: their own preprocessing, mean pooling unless asked
        for flag, given in (("--max-length", args.max_length is not None),
                            ("--text-column", args.text_column != "sentence"),
                            ("--prompt-column", args.prompt_column is not None),
                            ("--generate-tokens", args.generate_tokens is not None)):
            if given:
                raise UserError(f"{flag} does not apply to image models (--image-column); leave it out")
        extraction.update(image_column=args.image_column, flatten_grid=args.flatten_grid)
        extraction.pop("max_length")
        if args.pooling is None:
            extraction.pop("pooling")
    if args.task == "causal-lm":  # the causal-LM options; the engine refuses them for other tasks, naming them
        extraction.pop("pooling")
        extraction["prompt_column"] = args.prompt_column
        extraction["generate"] = None if not args.generate_tokens else {"max_new_tokens": args.generate_tokens}
        extraction["measures"] = args.measures
    elif args.prompt_column is not None or args.generate_tokens is not None or args.measures is not None:
        flag = ("--prompt-column" if args.prompt_column is not None else
                "--generate-tokens" if args.generate_tokens is not None else "--measures")
        raise InputError(f"{flag}: applies to --task causal-lm only; got --task {args.task}")
    task = None if args.image_column is not None and args.task == "nlp" else args.task  # images: their own preset
    scoring = {"task": task, "alpha": args.alpha, "beta": args.beta, "fss_method": args.fss_method,
               "aoag_method": args.aoag_method, "temperature": args.temperature}
    return _run_report(args.teacher, students if len(students) > 1 else next(iter(students.values())), dataset,
                       args=args, baseline=args.baseline_student, text_column=args.text_column,
                       label_column=args.label_column, extraction=extraction, scoring=scoring)


def _load_images(args: argparse.Namespace) -> Any:
    """``--dataset`` for ``--image-column``: an image folder (class subfolders, read by ``datasets``' imagefolder)
    or a dataset with an image column."""
    path = Path(args.dataset).expanduser()
    if path.is_dir() and not ((path / "dataset_info.json").exists() or (path / "state.json").exists()):
        import datasets

        try:
            splits = datasets.load_dataset("imagefolder", data_dir=str(path))
        except (FileNotFoundError, ValueError, OSError) as err:
            raise LoadError(f"--dataset {args.dataset!r} could not be read as an image folder: {err}") from None
        # a folder without split subfolders is one "train" split
        dataset = splits[args.split] if args.split in splits else splits[next(iter(splits))] if len(splits) == 1 else None
        if dataset is None:
            raise UserError(f"--split {args.split}: the image folder has the splits {sorted(splits)}")
        return dataset
    return _load_dataset(args.dataset, args.split, args.dataset_config)


def load_arrays(path: Path, *, max_array_bytes: int | None = None) -> dict[str, Any]:
    """Reads ``.npz`` (no pickles) or ``.safetensors`` into a dict of numpy arrays (see :mod:`._io`)."""
    from .._io import read_arrays

    return read_arrays(path, max_array_bytes=max_array_bytes)


def cmd_arrays(args: argparse.Namespace) -> int:
    from ..score import check_krs_options, compute_krs

    options = {"task": args.task, "alpha": args.alpha, "beta": args.beta, "fss_method": args.fss_method,
               "aoag_method": args.aoag_method, "temperature": args.temperature, "inputs": args.inputs,
               "max_mse": args.max_mse, "ignore_index": args.ignore_index}
    check_krs_options(**options)  # every flag checked before the file is read
    if args.max_decompressed_mb < 0:
        raise UserError(f"--max-decompressed-mb: expected a size in MB >= 0 (0 lifts the limit), got {args.max_decompressed_mb:g}")
    limit = int(args.max_decompressed_mb * 2**20) or None
    data = load_arrays(args.path, max_array_bytes=limit)

    def pick(*names: str) -> Any:
        present = [name for name in names if name in data]
        if len(present) > 1:  # as the Space: two names for one array is ambiguous, never silently one of them
            raise UserError(f"{args.path}: both {present[0]!r} and {present[1]!r} were given; they name the same "
                            "array, keep one")
        if present:
            return data[present[0]]
        raise UserError(f"{args.path}: missing array {names[0]!r} (found: {sorted(data)})")

    t_feat, s_feat = pick("teacher_features"), pick("student_features")  # (N, D) or (N, L, D), as everywhere
    out = compute_krs(t_feat, s_feat, pick("teacher_outputs", "teacher_logits"), pick("student_outputs", "student_logits"),
                      **options)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"KRS {out['krs']:.4f}  FSS {out['fss']:.4f} ({out['fss_method']})  AOAg {out['aoag']:.4f} "
              f"({out['aoag_method']})  alpha={out['alpha']} beta={out['beta']}  N={out['num_examples']}")
    return EXIT_OK


def cmd_export_hub(args: argparse.Namespace) -> int:
    from ..hub_export import export_hub

    files = export_hub(args.directory, overwrite=args.overwrite)
    print(f"Wrote {len(files)} files to {args.directory}: " + ", ".join(sorted(p.name for p in files.values())))
    print(f'Load it with evaluate.load("{args.directory}"); push the folder as a Gradio Space to publish it.')
    return EXIT_OK


def _space_export() -> Any:
    """``spaces_app/space_export.py`` of the source checkout this package sits in (it is not installed)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "spaces_app" / "space_export.py"
    spec = importlib.util.spec_from_file_location("space_export", path) if path.is_file() else None
    if spec is None or spec.loader is None:
        raise InputError("export-space needs a source checkout of the repository (spaces_app/ beside the "
                         f"package, looked for {path}); the installed package does not carry the Space's sources")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cmd_export_space(args: argparse.Namespace) -> int:
    export_space = _space_export().export_space

    files = export_space(args.directory, overwrite=args.overwrite)
    print(f"Wrote {len(files)} files to {args.directory} (app.py, requirements.txt, README.md, the package vendored).")
    print(f"Try it: pip install -r {args.directory}/requirements.txt && python {args.directory}/app.py")
    return EXIT_OK


def cmd_reproduce(args: argparse.Namespace) -> int:
    from ..reproduction import render_table, reproduce_sst2

    if args.dry_run:
        if args.scale != "full":
            raise UserError(f"--dry-run: only for --scale full (the scale that needs the Hub and GPUs), got --scale {args.scale}")
        from ..reproduction import full_scale_plan, render_plan

        print(render_plan(full_scale_plan(args.extra_seeds or (1, 2))))
        return EXIT_OK
    if args.jobs < 1:
        raise UserError(f"--jobs: expected an integer >= 1, got {args.jobs}")
    if args.krs_every is not None and args.krs_every < 1:
        raise UserError(f"--krs-every: expected an integer >= 1 (training steps), got {args.krs_every}")
    output_dir = args.output_dir or Path("results") / "sst2" / args.scale
    results = reproduce_sst2(args.scale, output_dir, work_dir=args.work_dir, data_dir=args.sst2_dir,
                             skip_training=args.skip_training, students=args.students,
                             extra_seeds=args.extra_seeds, progress=not args.quiet, jobs=args.jobs,
                             teacher_from=args.reuse_teacher, general_from=args.reuse_general,
                             krs_every=args.krs_every)
    print(render_table(results))
    print("Written: " + ", ".join(str(Path(output_dir) / f) for f in results["files"].values()))
    return EXIT_OK


def cmd_reproduce_vision(args: argparse.Namespace) -> int:
    from ..distillation.vision.run import reproduce_vision

    if args.jobs < 1:
        raise UserError(f"--jobs: expected an integer >= 1, got {args.jobs}")
    output_dir = args.output_dir or Path("results") / "vision" / ("digits" if args.scale == "cpu" else f"digits_{args.scale}")
    command = "knowledge-retention reproduce-vision " + " ".join(sys.argv[2:])
    results = reproduce_vision(args.scale, output_dir, work_dir=args.work_dir, data_dir=args.data_dir,
                               skip_training=args.skip_training, seeds=args.seeds, jobs=args.jobs,
                               progress=not args.quiet, command=command.strip())
    print((Path(output_dir) / results["files"]["table"]).read_text(encoding="utf-8"))
    print("Written: " + ", ".join(str(Path(output_dir) / f) for f in results["files"].values()))
    return EXIT_OK


def cmd_record_teacher(args: argparse.Namespace) -> int:
    from ..extraction import record_teacher

    parts = [p.strip() for p in args.layers.split(",")]
    try:
        layers: Any = args.layers if args.layers in ("final", "all") else [int(p) for p in parts]
    except ValueError:
        raise UserError(f"--layers: expected final, all or hidden-state indices like 0,2,-1; got {args.layers!r}") from None
    manifest = record_teacher(
        args.teacher, _load_dataset(args.dataset, args.split, args.dataset_config), args.out_dir,
        top_k=None if args.full_vocabulary else args.top_k, layers=layers, batch_size=args.batch_size,
        progress=not args.quiet, logprob_dtype=args.logprob_dtype, hidden_dtype=args.hidden_dtype,
        text_column=args.text_column, prompt_column=args.prompt_column, sequence_pooling=args.sequence_pooling,
        max_examples=args.max_examples, max_length=args.max_length, trust_remote_code=args.trust_remote_code,
        mixed_precision=None if args.mixed_precision == "no" else args.mixed_precision,
        distributed=int(os.environ.get("WORLD_SIZE", "1")) > 1)
    if int(os.environ.get("RANK", "0")) == 0:  # under accelerate launch / torchrun: the main process says it
        print(f"recorded {manifest['num_tokens']:,} tokens of {manifest['num_examples']:,} texts (top-{manifest['top_k']} of "
              f"{manifest['vocab_size']:,}, {manifest['bytes_per_token'] or 0:,.0f} bytes a token) in {args.out_dir}")
    return EXIT_OK
