"""The contract suite (issue 20 item 5), in the style of scikit-learn's ``test_common``.

Every case of every ``cases_*.py`` file in this folder runs at every entry point it names
(``contract_registry.ENTRY_POINTS`` and any a cases file adds): it must be refused by the package's own
error naming the argument or flag, or give a result equal to its independent reference. README.md
says how to add a file of cases.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
from contract_registry import ENTRY_POINTS, Case, expected_krs

from knowledge_retention import InputError

HERE = Path(__file__).resolve().parent
CASE_MODULES = [importlib.import_module(path.stem) for path in sorted(HERE.glob("cases_*.py"))]
ENTRIES: dict[str, Any] = dict(ENTRY_POINTS)
for _module in CASE_MODULES:
    ENTRIES.update(getattr(_module, "ENTRY_POINTS", {}))


def _params() -> list[Any]:
    params, seen = [], set()
    for module in CASE_MODULES:
        for case in module.CASES:
            assert (module.__name__, case.name) not in seen, f"two cases named {case.name} in {module.__name__}"
            seen.add((module.__name__, case.name))
            assert (case.refused is None) != (case.reference is None), f"{case.name}: give refused or reference"
            for entry in case.entries:
                assert entry in ENTRIES, f"{case.name}: unknown entry point {entry}"
                params.append(pytest.param(case, entry, id=f"{entry}:{module.__name__}:{case.name}"))
    return params


PARAMS = _params()


def test_the_suite_is_large_enough():
    assert len(PARAMS) >= 150, len(PARAMS)


@pytest.mark.parametrize("case, entry", PARAMS)
def test_contract(case: Case, entry: str, tmp_path: Path) -> None:
    run = ENTRIES[entry]
    if case.refused is not None:
        with pytest.raises(InputError) as info:  # InputTypeError is one too; any other exception fails
            run(case, tmp_path)
        message = str(info.value)
        assert re.search(case.refused, message, flags=re.S | re.I), f"{entry} said: {message}"
        return
    result = run(case, tmp_path)
    assert case.data is not None and case.reference is not None
    expected = case.reference(case.data(), case.options)
    for key in ("fss", "aoag"):
        assert result[key] == pytest.approx(expected[key], rel=case.rel, abs=1e-12), key
    if "krs" in result:
        assert result["krs"] == pytest.approx(expected_krs(expected, case.options), rel=case.rel, abs=1e-9)
