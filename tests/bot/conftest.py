"""The bot under test: the real StudyBot and discord.py, a recording fake of Discord's API,
and (for answers) a real index of the course guides with the real local model."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.client import StudyBot
from bot.storage import QuestionLog
from rag.config import AnswerSettings, DiscordSettings
from rag.index.embedder import Embedder
from rag.llm.registry import ModelRegistry
from rag.llm.settings import LLMSettings
from rag.services import Services, build_services
from tests.bot.fake_discord import (
    GUILD_ID,
    FakeDiscord,
    Person,
    Recorded,
    button_payload,
    guild_payload,
    interaction_payload,
    message_payload,
    now_iso,
)
from tests.conftest import make_settings, run

BOT_TASKS = ("CommandTree-invoker", "discord-ui-dynamic-item", "discord-ui-modal-dispatch",
             "discord.py: ")
FAST_LLM = LLMSettings(max_new_tokens=40, temperature=0.0)


class Harness:
    """Drives a StudyBot through the real discord.py machinery against a FakeDiscord."""

    def __init__(self, bot: StudyBot, fake: FakeDiscord) -> None:
        self.bot = bot
        self.fake = fake

    async def start(self) -> None:
        """Log in (runs setup_hook: cogs, command sync, warm-up) and join the course server."""
        self.fake.install(self.bot)
        await self.bot.login("test-token")
        self.bot._connection._add_guild_from_data(guild_payload())

    def command(self, name: str, person: Person, **options: Any) -> str:
        """Feed INTERACTION_CREATE for a slash command; return the interaction token."""
        payload = interaction_payload(name, options, person, **self._extra(options))
        self.fake.install(self.bot)  # the webhook adapter is per context: set it here too
        self.bot._connection.parse_interaction_create(payload)
        return payload["token"]

    def _extra(self, options: dict[str, Any]) -> dict[str, Any]:
        attachment = options.pop("_attachment", None)
        if attachment is None:
            return {}
        options["file"] = attachment["id"]
        return {"resolved": {"attachments": {attachment["id"]: attachment}}}

    def feed(self, payload: dict[str, Any]) -> str:
        """Feed any INTERACTION_CREATE payload; return its token."""
        self.fake.install(self.bot)
        self.bot._connection.parse_interaction_create(payload)
        return payload["token"]

    def click(self, message: dict[str, Any], custom_id: str, person: Person) -> str:
        """Feed INTERACTION_CREATE for a button click; return the interaction token."""
        payload = button_payload(message, custom_id, person)
        self.fake.install(self.bot)
        self.bot._connection.parse_interaction_create(payload)
        return payload["token"]

    def post(self, content: str, person: Person, channel_id: int, mention: bool = False,
             reply_to: dict | None = None) -> dict:
        """Feed MESSAGE_CREATE for a message someone posts (Discord keeps it, too); with
        `reply_to`, Discord's reply to that message (`mention`: the reply pings the bot)."""
        me = self.bot.user
        mentions = [{"id": str(me.id), "username": me.name, "discriminator": "0",
                     "avatar": None, "bot": True}] if mention and me else []
        payload = message_payload(content, person, channel_id, mentions)
        if reply_to is not None:
            payload.update(type=19, referenced_message=reply_to, message_reference={
                "type": 0, "message_id": reply_to["id"], "channel_id": reply_to["channel_id"],
                "guild_id": str(GUILD_ID)})
        self.fake.messages.setdefault(channel_id, []).append(payload)
        self.fake.install(self.bot)
        self.bot._connection.parse_message_create(payload)
        return payload

    def update(self, posted: dict, **changes: Any) -> dict:
        """Feed MESSAGE_UPDATE for a message someone edited (a new `content`) or that Discord
        changed (an embed unfurled from a link keeps the content and the edit time)."""
        payload = {**posted, **changes}
        if "content" in changes:
            payload["edited_timestamp"] = now_iso()
        kept = self.fake.messages.get(int(posted["channel_id"]), [])
        self.fake.messages[int(posted["channel_id"])] = [
            payload if m["id"] == posted["id"] else m for m in kept]
        self.fake.install(self.bot)
        self.bot._connection.parse_message_update(payload)
        return payload

    async def settle(self, timeout: float = 120.0) -> None:
        """Wait until every command, button and event handler the bot started has finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            busy = [t for t in asyncio.all_tasks()
                    if t.get_name().startswith(BOT_TASKS) and not t.done()]
            if not busy:
                return
        raise AssertionError("the bot did not finish within the timeout")

    async def shown_for(self, name: str, person: Person, timeout: float = 120.0,
                        **options: Any) -> str:
        """Run one slash command to its end and return everything the bot sent for it (the
        payloads, as JSON): what the user was told, one command after another."""
        token = self.command(name, person, **options)
        await self.settle(timeout)
        return json.dumps([r.payload for r in self.for_token(token)])

    def for_token(self, token: str) -> list[Recorded]:
        """The requests that answered one interaction."""
        return [r for r in self.fake.requests if f"/{token}/" in r.path or r.path.endswith(token)]

    def in_channel(self, channel_id: int) -> list[Recorded]:
        """The requests that sent or edited messages in a channel."""
        return [r for r in self.fake.requests if r.path.startswith(f"/channels/{channel_id}/")]


def bot_services(services: Services, **discord: Any) -> Services:
    """The same index and models, with other Discord settings."""
    settings = services.settings.model_copy(
        update={"discord": DiscordSettings(**{"guild_id": GUILD_ID, **discord})}
    )
    return dataclasses.replace(services, settings=settings)


# The per-channel write window of the test bots that do not test it (Discord's is 5 s).
TEST_CHANNEL_WINDOW_S = 0.5


@pytest.fixture
async def make_harness(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start a bot over given services; every bot is closed after the test."""
    started: list[StudyBot] = []

    async def make(services: Services, *, warm_up: bool = False, latency_s: float = 0.0,
                   app_flags: int = 1 << 19, log_name: str | None = None,
                   **discord: Any) -> Harness:
        # Discord's per-channel rate (5 writes per 5 s) is the pacing tests' subject; the
        # others would only wait it out, so they run with a tenth of the window unless told.
        discord.setdefault("channel_window_s", TEST_CHANNEL_WINDOW_S)
        # The same `log_name` twice: a bot restarted over the same question log.
        log = QuestionLog(tmp_path / (log_name or f"bot-{len(started)}.sqlite3"))
        bot = StudyBot(bot_services(services, **discord), log, warm_up=warm_up)
        started.append(bot)
        harness = Harness(bot, FakeDiscord(latency_s, app_flags))
        await harness.start()
        return harness

    yield make
    for bot in started:
        await bot.close()
        bot.questions.close()


@pytest.fixture
def empty_services(tmp_path: Path, embedder: Embedder) -> Services:
    """Services over an empty index (nothing loads until something is searched)."""
    settings = make_settings(tmp_path / "data", llm=FAST_LLM, materials_dir=tmp_path / "materials")
    return build_services(settings, embedder=embedder)


@pytest.fixture(scope="session")
def bot_registry(llm_cache_dir: Path) -> ModelRegistry:
    """The real local models, converted once per session, short answers for speed."""
    return ModelRegistry(FAST_LLM, llm_cache_dir)


@pytest.fixture(scope="session")
def guides_services(
    tmp_path_factory: pytest.TempPathFactory,
    shared_materials: Path,
    embedder: Embedder,
    bot_registry: ModelRegistry,
) -> Services:
    """A real index of the course guides (Markdown only: fast to ingest) with SmolLM2."""
    root = tmp_path_factory.mktemp("bot-materials")
    shutil.copytree(shared_materials / "guides", root / "guides")
    # These tests exercise streamed generation; the quoted and verified styles have their own.
    settings = make_settings(tmp_path_factory.mktemp("bot-data"), llm=FAST_LLM,
                             materials_dir=root, answer=AnswerSettings(style="generative"))
    services = build_services(settings, embedder=embedder, models=bot_registry)
    report = run(root, services)
    assert report.ok and not report.skipped
    return services
