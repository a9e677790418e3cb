"""The script every multi-process test runs, once per process (started by torchrun)::

    python -m torch.distributed.run --nproc_per_node 2 -m distributed.launch SCENARIO --out-dir DIR [-- ARG ...]

with ``tests/`` on ``PYTHONPATH`` (the ``torchrun`` fixture of ``tests/conftest.py`` builds this
command). It runs the registered scenario ``SCENARIO`` (see :mod:`distributed`) with ``DIR`` and the
arguments after ``--``, and writes what it returns (JSON, ``null`` for None) to ``DIR/rank<RANK>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    own, extra = argv[:cut], argv[cut + 1:]
    from distributed import discover, find

    parser = argparse.ArgumentParser(prog="distributed.launch", description=__doc__, allow_abbrev=False)
    parser.add_argument("scenario")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(own)
    function = find(args.scenario)
    if function is None:
        parser.error(f"unknown scenario {args.scenario!r}; registered: {sorted(discover())}")
    import torch

    torch.set_num_threads(1)  # tiny models; two processes share the cores
    result = function(args.out_dir, extra)
    rank = int(os.environ.get("RANK", "0"))
    (args.out_dir / f"rank{rank}.json").write_text(json.dumps(result), encoding="utf-8")
    # leave the process group before the interpreter exits: gloo's threads torn down at exit can abort a
    # finished process ("terminate called without an active exception", exit -6), seen once in CI
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
