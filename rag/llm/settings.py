"""Typed LLM configuration, mounted by the settings tree as `Settings.llm`.

Plain pydantic models: nothing here reads the environment. The built-in local models are
always registered; configured models are added to them (a model of the same name replaces
the built-in one), so setting one extra model through the environment keeps the defaults.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PACKAGED_PREFIX = "packaged:"
# How answers are made (rag/answering/styles.py): quoted, generated then verified, generated.
AnswerStyle = Literal["extractive", "verified", "generative"]


class ModelSpec(BaseModel):
    """One chat model: where it runs, what it is, and what it costs."""

    model_config = ConfigDict(frozen=True)

    name: str
    backend: Literal["local", "openai"]
    # local: "packaged:<name>", a directory, a .gguf file or a hub id; openai: the served model id.
    model: str
    # False for base models: they get a plain-text prompt instead of the chat template.
    chat_template: bool = True
    base_url: str | None = None
    # The *name* of the environment variable holding the API key, never the key itself.
    api_key_env: str | None = None
    # Dollars per million tokens in and out; None: not known (shown as "unknown", never guessed).
    price_in_per_mtok: float | None = Field(default=None, ge=0)
    price_out_per_mtok: float | None = Field(default=None, ge=0)
    context_window: int = Field(default=2048, gt=0)
    # Local models only: >1 discourages repeating tokens. Very small models fall into loops
    # ("it is a type of model that is a type of model…") without it.
    repetition_penalty: float = Field(default=1.0, gt=0)
    # None: quotes (extractive) for local models, verified generation for served ones.
    answer_style: AnswerStyle | None = None
    # Whether the model's rewrite of a follow-up question may be used as the search query
    # (still only when it passes the checks in rag/retrieval/followup.py). None: served models
    # yes, local ones no (a 135M model answers instead of rewriting).
    rewrites_follow_ups: bool | None = None

    @property
    def trusted_rewriter(self) -> bool:
        """Whether this model's follow-up rewrites may be tried as search queries."""
        if self.rewrites_follow_ups is not None:
            return self.rewrites_follow_ups
        return self.backend == "openai"

    @model_validator(mode="after")
    def _openai_needs_url(self) -> ModelSpec:
        if self.backend == "openai" and not self.base_url:
            raise ValueError(f"model '{self.name}': the openai backend needs a base_url")
        return self


def builtin_models() -> dict[str, ModelSpec]:
    """The packaged local models every configuration knows."""
    return {
        "smollm2": ModelSpec(
            name="smollm2", backend="local", model="packaged:smollm2", repetition_penalty=1.15
        ),
        "gemma3-base": ModelSpec(
            name="gemma3-base",
            backend="local",
            model="packaged:gemma3-270m",
            chat_template=False,
        ),
    }


class LLMSettings(BaseModel):
    """Which chat models exist, which one answers by default, and how calls behave."""

    default: str = "smollm2"
    models: dict[str, ModelSpec] = Field(default_factory=builtin_models)
    max_new_tokens: int = Field(default=256, gt=0)
    temperature: float = Field(default=0.2, ge=0.0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # Servers: the longest silence between two bytes of an answer.
    read_timeout_s: float = Field(default=60.0, gt=0)
    # Servers: the most one whole generation may take, retries included, so a server that
    # trickles tokens cannot hold an answer's slot forever.
    generation_deadline_s: float = Field(default=120.0, gt=0)
    # Servers: how often a request that failed before its response began is sent again
    # (the openai SDK's exponential backoff: 0.5 s doubling up to 8 s, or Retry-After).
    max_retries: int = Field(default=2, ge=0)
    # Local models converted from 4-bit GGUF files run their 4-bit layers through torch's int4
    # kernel: the same weights, bf16 activations, faster decoding on CPU (docs/benchmarks.md,
    # benchmarks/local_generation.py). False keeps every layer in fp32.
    int4_kernels: bool = True
    # Local models converted from GGUF whose architecture onnxruntime-genai's builder handles
    # (SmolLM2; not Gemma-3) generate text through an fp32 ONNX build of themselves, made once
    # beside the converted model (rag/llm/onnx_generation.py, docs/benchmarks.md). False keeps
    # generation on transformers. The next-token and attention demos use transformers either way.
    onnx_runtime: bool = True

    @field_validator("models", mode="before")
    @classmethod
    def _name_from_key(cls, value: Any) -> Any:
        # Lets the environment say STUDY_ASSISTANT_LLM__MODELS__VLLM__BACKEND=openai without
        # repeating the name.
        if not isinstance(value, dict):
            return value
        return {
            key: {"name": key, **spec} if isinstance(spec, dict) else spec
            for key, spec in value.items()
        }

    @field_validator("models", mode="after")
    @classmethod
    def _merge_with_builtins(cls, value: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
        for key, spec in value.items():
            if spec.name != key:
                raise ValueError(f"model registered as '{key}' is named '{spec.name}'")
        return {**builtin_models(), **value}

    @model_validator(mode="after")
    def _default_is_known(self) -> LLMSettings:
        if self.default not in self.models:
            known = ", ".join(sorted(self.models))
            raise ValueError(f"default model '{self.default}' is not one of: {known}")
        return self
