"""The entry point: parse, run the subcommand, and map errors to exit codes (2 input, 3 loading, 1 a bug)."""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from collections.abc import Sequence

from .._validation import InputError, LoadError
from .commands import (
    cmd_arrays,
    cmd_default,
    cmd_evaluate,
    cmd_export_hub,
    cmd_export_space,
    cmd_record_teacher,
    cmd_reproduce,
    cmd_reproduce_vision,
)
from .parser import EXIT_ERROR, EXIT_LOAD, EXIT_USAGE, UserError, build_parser


def _silence_progress_bars() -> None:
    """``--quiet``: also the progress bars of transformers (weight loading) and datasets (tokenising)."""
    try:
        import datasets
        from transformers.utils import logging as hf_logging
    except ImportError:  # the `extract` extra is not installed: nothing of theirs will run
        return
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _flags_of(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """``{parameter name: flag}`` of one subcommand, read from its parser (``fss_method`` -> ``--fss-method``)."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    sub = subparsers[0].choices.get(command) if subparsers else None
    flags: dict[str, str] = {}
    for action in (sub or parser)._actions:
        long = [o for o in action.option_strings if o.startswith("--")]
        if long and action.dest not in ("help",):
            flags[action.dest] = long[0]
    return flags


def as_flags(message: str, flags: dict[str, str]) -> str:
    """An error raised by the library, worded for a command-line user: the flags they typed.

    A backquoted name (`` `alpha` ``) becomes its flag (`` `--alpha` ``) and ``inputs='probabilities'``
    becomes ``--inputs probabilities``.
    Names that are not options of the command (array keys such as ``teacher_features``) are kept.
    """
    if not flags:
        return message
    names = "|".join(re.escape(name) for name in sorted(flags, key=len, reverse=True))
    message = re.sub(rf"\b({names})=(['\"])(.*?)\2", lambda m: f"{flags[m.group(1)]} {m.group(3)}", message)
    message = re.sub(rf"\b({names})=([\w.+-]+)", lambda m: f"{flags[m.group(1)]} {m.group(2)}", message)
    return re.sub(rf"`({names})`", lambda m: f"`{flags[m.group(1)]}`", message)


#: How the evaluator names the CLI's two students (``evaluate_students``' keys) on the command line.
_STUDENT_FLAGS = {"student": "--student", "baseline": "--baseline-student"}


def _user_message(err: BaseException, parser: argparse.ArgumentParser, command: str) -> str:
    """One line: the library's message in the flags the user typed (students by their flags too)."""
    message = " ".join(str(err).split())
    if command in ("evaluate", "default"):
        # the library's names for what the command line reads from the dataset or sets by other flags
        message = message.replace("`labels`", "`--label-column` (the labels)").replace("`generate`", "`--generate-tokens`")
        for name, flag in _STUDENT_FLAGS.items():
            for form in (f"`students[{name!r}]`", f"`student_tokenizers[{name!r}]`"):
                message = message.replace(form, f"`{flag}`")
            message = message.replace(f"student {name!r}", f"student ({flag})")
    return as_flags(message, _flags_of(parser, command))


COMMANDS = {"default": cmd_default, "evaluate": cmd_evaluate, "arrays": cmd_arrays, "reproduce-sst2": cmd_reproduce,
            "reproduce-vision": cmd_reproduce_vision, "export-hub": cmd_export_hub, "export-space": cmd_export_space,
            "record-teacher": cmd_record_teacher}


def _join_negative_layers(argv: list[str]) -> list[str]:
    """``--layers -1:-1`` as ``--layers=-1:-1``: argparse reads a value that starts with '-' (and is not a
    number) as an option, so the negative indices the help offers would be refused."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--layers" and i + 1 < len(argv) and re.fullmatch(r"-\d+:-?\d+(,-?\d+:-?\d+)*", argv[i + 1]):
            out.append(f"--layers={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["default", *argv]
    argv = _join_negative_layers(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["default"])
    if getattr(args, "quiet", False):
        _silence_progress_bars()
    import warnings

    # a warning (FSS only: a model without a classification head, ...) reads as one line, not as source code
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *rest, **kw: f"knowledge-retention: warning: {message}\n"
    try:
        return _run_command(parser, args)
    finally:
        warnings.formatwarning = previous


def _run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Runs the subcommand; the package's own errors become one line and exit 2 or 3, anything else exit 1."""
    try:
        return COMMANDS[args.command](args)
    except (LoadError, OSError) as err:  # a model or dataset that cannot be loaded (before InputError: a LoadError is both)
        if os.environ.get("KNOWLEDGE_RETENTION_DEBUG"):
            raise
        print(f"knowledge-retention: error: {_user_message(err, parser, args.command)}", file=sys.stderr)
        return EXIT_LOAD
    except (UserError, InputError) as err:  # the user's mistake: exactly the package's own input errors
        if os.environ.get("KNOWLEDGE_RETENTION_DEBUG"):
            raise
        print(f"knowledge-retention: error: {_user_message(err, parser, args.command)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("knowledge-retention: interrupted", file=sys.stderr)
        return 130
    except Exception:  # anything else is a bug: say so, with the stack trace to report
        if os.environ.get("KNOWLEDGE_RETENTION_DEBUG"):
            raise
        traceback.print_exc()
        print("knowledge-retention: internal error (a bug, not your input): please report the stack trace above",
              file=sys.stderr)
        return EXIT_ERROR
