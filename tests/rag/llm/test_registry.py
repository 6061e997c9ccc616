"""Settings and the registry that turns them into chat models."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag.llm.base import ChatModel, StopScanner
from rag.llm.local import LocalChatModel
from rag.llm.openai_compat import OpenAIChatModel
from rag.llm.registry import ModelRegistry, UnknownModel
from rag.llm.settings import LLMSettings, ModelSpec
from tests.rag.llm.conftest import FirstLoad


class MountedSettings(BaseSettings):
    """The way the settings tree mounts LLMSettings, to check environment configuration."""

    model_config = SettingsConfigDict(env_prefix="STUDY_ASSISTANT_", env_nested_delimiter="__")
    llm: LLMSettings = Field(default_factory=LLMSettings)


def test_defaults_register_the_packaged_models() -> None:
    settings = LLMSettings()
    assert settings.default == "smollm2"
    assert settings.models["smollm2"].model == "packaged:smollm2"
    assert settings.models["gemma3-base"].chat_template is False


def test_environment_adds_a_vllm_model_and_keeps_the_packaged_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STUDY_ASSISTANT_LLM__DEFAULT", "vllm")
    monkeypatch.setenv("STUDY_ASSISTANT_LLM__MODELS__VLLM__BACKEND", "openai")
    monkeypatch.setenv("STUDY_ASSISTANT_LLM__MODELS__VLLM__MODEL", "Qwen/Qwen2.5-7B-Instruct")
    monkeypatch.setenv("STUDY_ASSISTANT_LLM__MODELS__VLLM__BASE_URL", "http://vllm:8000/v1")
    llm = MountedSettings().llm
    assert llm.default == "vllm"
    assert llm.models["vllm"].name == "vllm"
    assert llm.models["vllm"].base_url == "http://vllm:8000/v1"
    assert {"smollm2", "gemma3-base", "vllm"} <= set(llm.models)


def test_default_must_be_a_known_model() -> None:
    with pytest.raises(ValidationError, match="gemma3-base, smollm2"):
        LLMSettings(default="gpt-9")


def test_openai_model_needs_a_base_url() -> None:
    with pytest.raises(ValidationError, match="base_url"):
        ModelSpec(name="v", backend="openai", model="m")


def test_registry_builds_each_model_once_and_lazily(tmp_path: Path) -> None:
    vllm = ModelSpec(name="vllm", backend="openai", model="m", base_url="http://127.0.0.1:9/v1")
    registry = ModelRegistry(LLMSettings(models={"vllm": vllm}), tmp_path, environ={})
    assert registry.names() == ["smollm2", "gemma3-base", "vllm"]
    local = registry.get()
    assert isinstance(local, LocalChatModel) and isinstance(local, ChatModel)
    assert registry.get("smollm2") is local
    assert isinstance(registry.get("vllm"), OpenAIChatModel)
    assert not (tmp_path / "models").exists(), "getting a model must not load it"


def test_environment_switches_the_onnx_runtime_off(
    first_load: FirstLoad, llm_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUDY_ASSISTANT_LLM__ONNX_RUNTIME", "false")
    local = ModelRegistry(MountedSettings().llm, llm_cache_dir).get()
    assert isinstance(local, LocalChatModel)
    assert local.loaded().onnx is None
    assert first_load.loader.load("packaged:smollm2").onnx is not None, "on by default"


def test_unknown_model_lists_the_known_names(tmp_path: Path) -> None:
    registry = ModelRegistry(LLMSettings(), tmp_path)
    with pytest.raises(UnknownModel, match="smollm2, gemma3-base"):
        registry.get("gpt-9")


def test_stop_string_split_across_pieces_is_found() -> None:
    scanner = StopScanner(["</answer>"])
    emitted = [scanner.feed(p) for p in ["The answer", " is 4</ans", "wer> and more"]]
    assert "".join(emitted) == "The answer is 4"
    assert scanner.stopped


def test_held_back_prefix_is_released_when_no_stop_follows() -> None:
    scanner = StopScanner(["###"])
    assert scanner.feed("a #") == "a "
    assert scanner.feed("1 ok") == "#1 ok"
    assert scanner.feed("tail #") == "tail "
    assert scanner.flush() == "#"
    assert not scanner.stopped
