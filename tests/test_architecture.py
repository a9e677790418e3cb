"""The layout ARCHITECTURE.md describes, checked: no import cycle, imports point down the layers, small
modules and functions. Read from the source (ast), nothing is imported."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "knowledge_retention"
#: the flat numpy maths at the package root (also the evaluate module folder): no torch, no upper layer
MATHS = ("similarity", "feature_cka", "kernel_cka", "agreement", "spatial_agreement", "token_agreement", "score",
         "streaming", "methods", "_numerics", "_state", "_validation", "_io", "_json", "_random")
UPPER = ("extraction", "reporting", "report", "cli", "callbacks", "integrations", "distillation", "app",
         "reproduction", "lm_report", "lm_demo", "hub_export", "space_export")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path) -> Iterator[tuple[str, bool]]:
    """``(imported module, at module level)`` for every import of the package's own modules."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        level_ok = id(node) in top_level or _in_type_checking(tree, node)
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("knowledge_retention"):
                yield target, id(node) in top_level and not _in_type_checking(tree, node)
                for alias in node.names:
                    yield f"{target}.{alias.name}", id(node) in top_level
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("knowledge_retention"):
                    yield alias.name, level_ok


def _in_type_checking(tree: ast.Module, node: ast.AST) -> bool:
    for block in tree.body:
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test):
            if any(node is inner for inner in ast.walk(block)):
                return True
    return False


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, module_level in _imports(name, path):
            if module_level and target in modules and target != name:
                graph[name].add(target)
    return graph


def test_the_package_has_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                # a package importing its own submodule in __init__ is not a cycle of the code
                if not all(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(cycle, cycle[1:], strict=False)):
                    pytest.fail("import cycle: " + " -> ".join(cycle))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("maths", MATHS)
def test_the_maths_imports_no_torch_and_no_upper_layer(maths):
    path = PACKAGE / f"{maths}.py"
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    for node in tree.body:  # module level: the maths must import without torch
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(n == "torch" or n.startswith("torch.") for n in names), f"{maths} imports torch"
    for target, _ in _imports(f"knowledge_retention.{maths}", path):
        assert not any(target.startswith(f"knowledge_retention.{upper}") for upper in UPPER), (maths, target)


def test_modules_and_functions_stay_small():
    too_big = []
    for name, path in _modules().items():
        source = path.read_text(encoding="utf-8")
        lines = source.count("\n")
        if lines > 800:
            too_big.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno:
                length = node.end_lineno - node.lineno + 1
                if length > 150:
                    too_big.append(f"{name}.{node.name}: {length} lines")
    assert not too_big, too_big
