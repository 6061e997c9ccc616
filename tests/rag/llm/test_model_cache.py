"""The conversion cache is written atomically: a failed build never looks like a finished one."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from rag.llm.base import ModelLoadError
from rag.llm.model_cache import (
    build_atomically,
    export_packaged_model,
    gguf_parsed_once,
    read_marker,
)


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


def small_gguf(path: Path) -> Path:
    """A real GGUF file: one metadata field and one tensor."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.arange(8, dtype=np.float32).reshape(2, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_conversion_parses_each_gguf_file_once_and_leaves_gguf_as_it_was(
    tmp_path: Path,
) -> None:
    first, second = small_gguf(tmp_path / "a.gguf"), small_gguf(tmp_path / "b.gguf")
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with gguf_parsed_once():
        from gguf import GGUFReader, get_tensor_name_map  # as transformers imports them

        shared = GGUFReader(first)
        assert GGUFReader(str(first)) is shared
        assert GGUFReader(second) is not shared
        assert shared.fields["llama.block_count"].parts[-1][0] == 2
        assert [t.name for t in shared.tensors] == ["token_embd.weight"]
        arch = gguf.MODEL_ARCH.LLAMA
        assert get_tensor_name_map(arch, 2) is get_tensor_name_map(arch, 2)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)
    assert gguf.GGUFReader(first) is not gguf.GGUFReader(first)


def test_conversions_on_two_threads_leave_gguf_as_it_was() -> None:
    """The bot's warm-up and a demo can convert two models at once: the second block must not
    take the first one's swapped names for the originals."""
    import threading

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with gguf_parsed_once():
            first_in.set()
            second_in.wait(0.5)  # with the blocks exclusive, the second is still waiting
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with gguf_parsed_once():
            second_in.set()
            first_out.wait(0.5)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)
