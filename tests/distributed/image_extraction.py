"""Scenario ``image-extraction``: :func:`image_fixtures.run_all` in 2 processes (one ``Accelerator(cpu=True)``,
gloo), for ``tests/extraction/test_image_engine.py::test_two_processes_equal_one``, which runs it in one
process and compares.
"""

from __future__ import annotations

from pathlib import Path

import image_fixtures as fx

from distributed import scenario


@scenario("image-extraction")
def main(out_dir: Path, argv: list[str]) -> dict:  # type: ignore[type-arg]
    from accelerate import Accelerator

    from knowledge_retention.extraction.tasks.image_models import import_torchvision

    import_torchvision()
    accelerator = Accelerator(cpu=True)
    results = fx.run_all(accelerator)
    accelerator.wait_for_everyone()
    return results
