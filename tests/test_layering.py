"""Imports flow one way: bot → rag/ingest; ingest and rag never import discord."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO


def imported_modules(package: str) -> set[tuple[str, str]]:
    """(file, top-level module) for every import in a package."""
    found = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {(path.name, a.name.split(".")[0]) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((path.name, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("package", ["rag", "ingest"])
def test_core_packages_never_import_discord_or_the_bot(package: str):
    offenders = {(f, m) for f, m in imported_modules(package) if m in ("discord", "bot")}
    assert not offenders


def test_the_bot_process_never_imports_vllm():
    assert not {(f, m) for f, m in imported_modules("bot") if m == "vllm"}
    assert not {(f, m) for f, m in imported_modules("rag") if m == "vllm"}


def test_imports_are_checked_in_real_files():
    assert ("store.py", "chromadb") in imported_modules("rag")
