"""Multi-process checks: one launcher (``launch.py``), scenarios registered by name.

Every test that needs several processes starts ``python -m distributed.launch SCENARIO`` in each of
them through the ``torchrun`` fixture of ``tests/conftest.py`` (torchrun on CPU, gloo, a free port;
``nnodes=2`` starts two torchrun agents that meet on localhost, as two machines would)::

    def test_mine(torchrun, tmp_path):
        run = torchrun("my-scenario", tmp_path)        # 2 processes; extra arguments after the folder
        first, second = run.ranks                       # what each process returned, by rank

A scenario is a function of the output folder and the extra arguments, registered under a name in a
module of this package named after it (``my-scenario`` -> ``my_scenario.py``: the launcher imports that
module first, and every module of the package, test modules aside, only for a name it does not find
there); the JSON-safe value it returns is written to ``<out_dir>/rank<k>.json`` (``k`` = the global rank)::

    from distributed import scenario

    @scenario("my-scenario")
    def my_scenario(out_dir: Path, argv: list[str]) -> dict:
        ...

The single-process side of a check imports the same module (``from distributed import extraction``),
so both sides build bit-identical models from :mod:`text_fixtures` / :mod:`lm_fixtures`.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

Scenario = Callable[[Path, list[str]], "dict[str, Any] | None"]

SCENARIOS: dict[str, Scenario] = {}
"""Every registered scenario by name (filled as the modules of this package are imported)."""


def scenario(name: str) -> Callable[[Scenario], Scenario]:
    """Registers the decorated function as the scenario ``name``."""

    def register(function: Scenario) -> Scenario:
        known = SCENARIOS.get(name)
        if known is not None and known.__code__.co_filename != function.__code__.co_filename:
            raise ValueError(f"two scenarios are called {name!r}: {known.__module__} and {function.__module__}")
        SCENARIOS[name] = function
        return function

    return register


def find(name: str) -> Scenario | None:
    """The scenario ``name``: from the module named after it (``-`` read as ``_``), else from any module."""
    module = name.replace("-", "_")
    if name not in SCENARIOS and module.isidentifier() and importlib.util.find_spec(f"{__name__}.{module}"):
        importlib.import_module(f"{__name__}.{module}")
    return SCENARIOS.get(name) or discover().get(name)


def discover() -> dict[str, Scenario]:
    """Imports every module of this package but the launcher and test modules; returns :data:`SCENARIOS`."""
    for info in pkgutil.iter_modules(__path__):
        if info.name != "launch" and not info.name.startswith("test_"):
            importlib.import_module(f"{__name__}.{info.name}")
    return SCENARIOS
