"""The packages stack one way: cli and bot on top, then ingest, then rag; no import cycles.

Imports are read from the source (ast), so the tests see every import, including ones inside
functions. Imports under `if TYPE_CHECKING:` never run and are left out of the runtime graph.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("rag", "ingest", "bot", "cli")
# Project imports inside a function, each for a reason written beside it in the code.
DELAYED_ALLOWED = {("cli.bot", "bot.app"), ("rag.llm.local", "rag.llm.packing")}


@dataclass(frozen=True)
class Import:
    """One import statement: who imports what, and whether it runs inside a function."""

    module: str
    target: str
    delayed: bool
    typing_only: bool


def module_name(path: Path) -> str:
    """`rag/index/chroma_store.py` → `rag.index.chroma_store`."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:  # relative: resolve against the importing package
        base = module.split(".")[: -node.level]
        stem = ".".join(base + ([node.module] if node.module else []))
    else:
        stem = node.module or ""
    # `from rag.retrieval import calibration` imports the submodule when there is one.
    return [f"{stem}.{a.name}" for a in node.names] + [stem]


def imports_of(path: Path) -> list[Import]:
    """Every import in a file, marked delayed (in a function) or typing-only."""
    module = module_name(path)
    found: list[Import] = []

    def visit(node: ast.AST, delayed: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for target in _targets(child, module):
                    found.append(Import(module, target, delayed, typing_only))
            inner = delayed or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            guarded = typing_only or (isinstance(child, ast.If) and _is_type_checking(child))
            visit(child, inner, guarded)

    visit(ast.parse(path.read_text(encoding="utf-8")), False, False)
    return found


def all_imports() -> list[Import]:
    """The imports of every module of the project's packages."""
    return [i for pkg in PACKAGES for path in sorted((REPO / pkg).rglob("*.py"))
            for i in imports_of(path)]


def project_modules() -> set[str]:
    """Every importable module name in the project's packages."""
    return {module_name(p) for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def top(name: str) -> str:
    """The top-level package of a dotted name."""
    return name.split(".")[0]


@pytest.mark.parametrize("package", ["rag", "ingest"])
def test_core_packages_never_import_adapters_or_terminal_libraries(package: str):
    banned = {"discord", "typer", "rich", "bot", "cli"}
    offenders = {(i.module, i.target) for i in all_imports()
                 if top(i.module) == package and top(i.target) in banned}
    assert not offenders


def test_rag_never_imports_ingest():
    assert not {(i.module, i.target) for i in all_imports()
                if top(i.module) == "rag" and top(i.target) == "ingest"}


def test_bot_never_imports_cli():
    assert not {(i.module, i.target) for i in all_imports()
                if top(i.module) == "bot" and top(i.target) == "cli"}


def test_the_bot_process_never_imports_vllm():
    assert not {(i.module, i.target) for i in all_imports() if top(i.target) == "vllm"}


def test_project_imports_are_not_delayed_into_functions():
    modules = project_modules()
    delayed = {(i.module, i.target) for i in all_imports()
               if i.delayed and not i.typing_only and i.target in modules}
    assert delayed <= DELAYED_ALLOWED


def runtime_graph() -> dict[str, set[str]]:
    """module → the project modules it imports when it runs (typing-only imports left out)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for i in all_imports():
        if not i.typing_only and i.target in modules and i.target != i.module:
            graph[i.module].add(i.target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in a directed graph (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_reports_a_cycle_and_accepts_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_the_projects_modules():
    assert find_cycle(runtime_graph()) is None


def test_the_import_graph_is_read_from_real_files():
    graph = runtime_graph()
    assert "rag.index.chroma_store" in graph["rag.services"]
    assert "rag.index.documents" in graph["ingest.pipeline"]
    assert ("cli.bot", "bot.app") in {(i.module, i.target) for i in all_imports() if i.delayed}
