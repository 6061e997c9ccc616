"""The conversion cache is written atomically: a failed build never looks like a finished one."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.llm.base import ModelLoadError
from rag.llm.model_cache import build_atomically, export_packaged_model, read_marker


def test_failed_build_leaves_no_target_and_no_temporary_dir(tmp_path: Path) -> None:
    target = tmp_path / "models" / "broken"

    def interrupted(work: Path) -> None:
        (work / "model.safetensors").write_bytes(b"half a model")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_atomically(target, interrupted)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_rebuild_replaces_the_old_directory_whole(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m"
    build_atomically(target, lambda work: (work / "old.txt").write_text("old"))
    build_atomically(target, lambda work: (work / "new.txt").write_text("new"))
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["m"]


def test_directory_without_marker_is_not_a_cache(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert read_marker(tmp_path) is None


def test_export_of_unknown_packaged_model_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="gemma3-270m, smollm2"):
        export_packaged_model("llama-70b", tmp_path)
