"""A recording stand-in for Discord, behind discord.py's own seams.

The bot under test is the real `StudyBot` with the real discord.py: its `HTTPClient.request`
(REST) and the webhook adapter that interactions use (`discord.webhook.async_.async_context`)
are replaced by a recorder that keeps every request and answers with realistic JSON (message
objects, interaction callbacks, threads). Gateway events are fed to the real connection state
(`parse_interaction_create`, `parse_message_create`, `parse_thread_create`), so slash commands
run through the real `CommandTree`, checks, transformers and error handler, and buttons
through the real view store.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import discord
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

APP_ID = 900000000000000001
GUILD_ID = 900000000000000010
CHANNEL_ID = 900000000000000020
OTHER_CHANNEL_ID = 900000000000000021
STUDENT_ROLE = 900000000000000030
INSTRUCTOR_ROLE = 900000000000000031
BOT_USER = {
    "id": str(APP_ID),
    "username": "study-assistant",
    "discriminator": "0",
    "global_name": None,
    "avatar": None,
    "bot": True,
}
# Permissions as Discord sends them: a student can read and write; MANAGE_GUILD is 1 << 5.
STUDENT_PERMISSIONS = str((1 << 10) | (1 << 11) | (1 << 31))
MANAGE_GUILD_PERMISSIONS = str(int(STUDENT_PERMISSIONS) | (1 << 5))
_snowflakes = itertools.count(910000000000000000)


def snowflake() -> str:
    """A fresh id."""
    return str(next(_snowflakes))


def user(user_id: int, name: str = "student") -> dict[str, Any]:
    """A user object."""
    return {"id": str(user_id), "username": name, "discriminator": "0", "global_name": name,
            "avatar": None, "bot": False}


def now_iso() -> str:
    """A Discord timestamp."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime())


@dataclass
class Recorded:
    """One request the bot made, with the moment it was made."""

    method: str
    path: str
    payload: dict[str, Any]
    at: float
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> dict[str, Any] | None:
        """The message this request sends or edits, if it carries one."""
        body = self.payload.get("data") if "/callback" in self.path else self.payload
        if isinstance(body, dict) and ({"content", "embeds", "components"} & set(body)):
            return body
        return None


def _payload(payload: Any, multipart: Any, form: Any) -> dict[str, Any]:
    if isinstance(payload, list):
        return {"__list__": payload}
    if payload is not None:
        return dict(payload)
    for part in multipart or form or []:
        if part.get("name") == "payload_json":
            return json.loads(part["value"])
    return {}


class RecordingAdapter(AsyncWebhookAdapter):
    """The webhook adapter (interaction callbacks, followups, original-response edits)."""

    def __init__(self, fake: FakeDiscord) -> None:
        super().__init__()
        self.fake = fake

    async def request(self, route, session, *, payload=None, multipart=None, proxy=None,  # type: ignore[override]
                      proxy_auth=None, files=None, reason=None, auth_token=None, params=None):
        """Record, then answer like Discord would."""
        return await self.fake.handle(route.method, route.url, _payload(payload, multipart, None),
                                      params or {})


class FakeDiscord:
    """Discord's REST API as far as the bot uses it: records requests, keeps messages."""

    def __init__(self, latency_s: float = 0.0, app_flags: int = 1 << 19) -> None:
        self.latency_s = latency_s
        self.app_flags = app_flags
        self.requests: list[Recorded] = []
        self.messages: dict[int, list[dict[str, Any]]] = {}
        self.originals: dict[str, dict[str, Any]] = {}
        self.cdn: dict[str, bytes] = {}
        self.state: Any = None
        self.adapter = RecordingAdapter(self)

    # -- the seams -------------------------------------------------------------------------
    def install(self, client: discord.Client) -> None:
        """Put the recorder behind a client's HTTP client and the interaction webhooks."""
        self.state = client._connection
        client.http.request = self.http_request  # type: ignore[method-assign]
        client.http.get_from_cdn = self.get_from_cdn  # type: ignore[method-assign]
        async_context.set(self.adapter)

    async def http_request(self, route, *, files=None, form=None, **kwargs):  # type: ignore[no-untyped-def]
        """HTTPClient.request: record, then answer."""
        payload = _payload(kwargs.get("json"), None, form)
        return await self.handle(route.method, route.url, payload, kwargs.get("params") or {})

    async def get_from_cdn(self, url: str) -> bytes:
        """Attachment downloads."""
        return self.cdn[url]

    # -- answering ---------------------------------------------------------------------------
    async def handle(self, method: str, url: str, payload: dict[str, Any], params: dict) -> Any:
        """Record a request and build Discord's answer to it."""
        path = re.sub(r"^https://discord\.com/api/v\d+", "", url)
        self.requests.append(Recorded(method, path, payload, time.monotonic(), dict(params)))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        for pattern, handler in self._routes():
            match = re.fullmatch(pattern, f"{method} {path}")
            if match:
                return handler(payload, params, *match.groups())
        raise AssertionError(f"the fake Discord has no route for {method} {path}")

    def _routes(self) -> list[tuple[str, Any]]:
        return [
            (r"GET /users/@me", lambda p, q: dict(BOT_USER)),
            (r"GET /oauth2/applications/@me", lambda p, q: self.application()),
            (r"PUT /applications/\d+(?:/guilds/(\d+))?/commands", self._commands),
            (r"POST /interactions/(\d+)/([^/]+)/callback", self._callback),
            (r"PATCH /webhooks/\d+/([^/]+)/messages/@original", self._edit_original),
            (r"GET /webhooks/\d+/([^/]+)/messages/@original", lambda p, q, t: self.originals[t]),
            (r"POST /webhooks/\d+/([^/]+)", self._followup),
            (r"POST /channels/(\d+)/messages", self._send),
            (r"PATCH /channels/(\d+)/messages/(\d+)", self._edit),
            (r"POST /channels/(\d+)/messages/(\d+)/threads", self._thread),
            (r"GET /channels/(\d+)/messages", self._history),
        ]

    def application(self) -> dict[str, Any]:
        """The application; by default with the Message Content intent enabled (limited)."""
        return {"id": str(APP_ID), "name": "study-assistant", "description": "", "icon": None,
                "bot_public": False, "bot_require_code_grant": False, "owner": user(1, "owner"),
                "verify_key": "00", "flags": self.app_flags, "summary": ""}

    def _commands(self, payload: Any, params: dict, guild_id: str | None) -> list[dict]:
        commands = payload if isinstance(payload, list) else payload.get("__list__", [])
        return [{**c, "id": snowflake(), "application_id": str(APP_ID), "version": "1",
                 **({"guild_id": guild_id} if guild_id else {})} for c in commands]

    def message(self, channel_id: int, body: dict[str, Any], author: dict | None = None,
                **extra: Any) -> dict[str, Any]:
        """A message object as Discord returns it."""
        return {
            "id": snowflake(), "channel_id": str(channel_id), "guild_id": str(GUILD_ID),
            "author": author or dict(BOT_USER), "content": body.get("content") or "",
            "timestamp": now_iso(), "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [],
            "embeds": body.get("embeds") or [], "components": _components(body),
            "pinned": False, "type": 0, "flags": body.get("flags", 0), **extra,
        }

    def _store(self, message: dict[str, Any]) -> dict[str, Any]:
        self.messages.setdefault(int(message["channel_id"]), []).append(message)
        return message

    def _callback(self, payload: dict, params: dict, interaction_id: str, token: str) -> dict:
        kind = payload["type"]
        data = payload.get("data") or {}
        response: dict[str, Any] = {"interaction": {
            "id": interaction_id, "type": 2, "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(data.get("flags", 0) & 64)}}
        if kind in (4, 5):
            original = self.message(CHANNEL_ID, data)
            self.originals[token] = original
            if kind == 4:
                response["resource"] = {"type": kind, "message": original}
        return response

    def _edit_original(self, payload: dict, params: dict, token: str) -> dict:
        original = self.originals[token]
        original.update({k: v for k, v in payload.items() if k in ("content", "embeds")})
        if "components" in payload:
            original["components"] = _components(payload)
        original["edited_timestamp"] = now_iso()
        return dict(original)

    def _followup(self, payload: dict, params: dict, token: str) -> dict:
        return self.message(CHANNEL_ID, payload)

    def _send(self, payload: dict, params: dict, channel_id: str) -> dict:
        return self._store(self.message(int(channel_id), payload))

    def _edit(self, payload: dict, params: dict, channel_id: str, message_id: str) -> dict:
        for message in self.messages.get(int(channel_id), []):
            if message["id"] == message_id:
                message.update({k: v for k, v in payload.items() if k in ("content", "embeds")})
                if "components" in payload:
                    message["components"] = _components(payload)
                return dict(message)
        raise AssertionError(f"edit of unknown message {message_id}")

    def _thread(self, payload: dict, params: dict, channel_id: str, message_id: str) -> dict:
        thread = {
            "id": message_id, "type": 11, "guild_id": str(GUILD_ID), "name": payload["name"],
            "parent_id": channel_id, "owner_id": str(APP_ID), "last_message_id": None,
            "rate_limit_per_user": 0, "message_count": 0, "member_count": 1, "flags": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                "archive_timestamp": now_iso(), "locked": False},
        }
        # Discord then sends THREAD_CREATE over the gateway.
        asyncio.get_running_loop().call_soon(self.state.parse_thread_create, dict(thread))
        return thread

    def _history(self, payload: dict, params: dict, channel_id: str) -> list[dict]:
        messages = self.messages.get(int(channel_id), [])
        before = int(params.get("before") or 1 << 63)
        older = [m for m in messages if int(m["id"]) < before]
        return list(reversed(older))[: int(params.get("limit") or 50)]

    # -- assertions helpers ------------------------------------------------------------------
    def sent_messages(self) -> list[Recorded]:
        """Every request that sent or edited a message."""
        return [r for r in self.requests if r.message is not None]


def _components(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(body.get("components") or [])


def guild_payload(instructor_role_name: str = "Instructor") -> dict[str, Any]:
    """GUILD_CREATE data: a course server with two text channels and two roles."""
    def role(role_id: int, name: str, position: int) -> dict[str, Any]:
        return {"id": str(role_id), "name": name, "permissions": STUDENT_PERMISSIONS,
                "position": position, "color": 0, "hoist": False, "managed": False,
                "mentionable": False, "flags": 0}

    def channel(channel_id: int, name: str) -> dict[str, Any]:
        return {"id": str(channel_id), "type": 0, "name": name, "position": 0,
                "permission_overwrites": [], "nsfw": False, "parent_id": None,
                "guild_id": str(GUILD_ID), "rate_limit_per_user": 0, "topic": None}

    return {
        "id": str(GUILD_ID), "name": "LLM course", "icon": None, "owner_id": "1",
        "roles": [role(GUILD_ID, "@everyone", 0), role(STUDENT_ROLE, "Student", 1),
                  role(INSTRUCTOR_ROLE, instructor_role_name, 2)],
        "channels": [channel(CHANNEL_ID, "study"), channel(OTHER_CHANNEL_ID, "off-topic")],
        "threads": [], "members": [], "emojis": [], "stickers": [], "features": [],
        "member_count": 3, "large": False, "unavailable": False, "verification_level": 0,
        "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0,
        "premium_tier": 0, "preferred_locale": "en-US", "nsfw_level": 0, "system_channel_flags": 0,
    }


@dataclass
class Person:
    """Someone in the course server."""

    id: int
    name: str = "student"
    roles: tuple[int, ...] = (STUDENT_ROLE,)
    permissions: str = STUDENT_PERMISSIONS

    def member(self) -> dict[str, Any]:
        """The member object interactions carry."""
        return {"user": user(self.id, self.name), "roles": [str(r) for r in self.roles],
                "joined_at": now_iso(), "deaf": False, "mute": False, "flags": 0,
                "permissions": self.permissions, "nick": None, "avatar": None}


def interaction_payload(
    name: str,
    options: dict[str, Any],
    person: Person,
    channel_id: int = CHANNEL_ID,
    resolved: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """INTERACTION_CREATE data for a slash command in the course server."""
    types = {str: 3, bool: 5, int: 4}
    opts = [{"name": k, "type": 11 if k == "file" else types[type(v)], "value": v}
            for k, v in options.items()]
    data: dict[str, Any] = {"id": snowflake(), "name": name, "type": 1, "options": opts,
                            "guild_id": str(GUILD_ID)}
    if resolved:
        data["resolved"] = resolved
    return _interaction(2, data, person, channel_id)


def _interaction(kind: int, data: dict, person: Person, channel_id: int, **extra: Any) -> dict:
    return {
        "id": snowflake(), "application_id": str(APP_ID), "type": kind,
        "token": f"tok{snowflake()}",
        "version": 1, "guild_id": str(GUILD_ID), "channel_id": str(channel_id),
        "channel": {"id": str(channel_id), "type": 0, "guild_id": str(GUILD_ID)},
        "member": person.member(), "app_permissions": MANAGE_GUILD_PERMISSIONS,
        "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
        "authorizing_integration_owners": {"0": str(GUILD_ID)}, "context": 0,
        "attachment_size_limit": 26214400, "data": data, **extra,
    }


def dm_interaction_payload(name: str, options: dict[str, Any], person: Person) -> dict[str, Any]:
    """INTERACTION_CREATE data for a slash command in a direct message."""
    payload = interaction_payload(name, options, person)
    for key in ("guild_id", "member", "guild_locale"):
        payload.pop(key)
    payload["data"].pop("guild_id")
    payload["user"] = user(person.id, person.name)
    payload["channel"] = {"id": snowflake(), "type": 1}
    payload["channel_id"] = payload["channel"]["id"]
    payload["context"] = 1
    return payload


def button_payload(message: dict[str, Any], custom_id: str, person: Person) -> dict[str, Any]:
    """INTERACTION_CREATE data for a click on a button of a message."""
    data = {"custom_id": custom_id, "component_type": 2}
    return _interaction(3, data, person, int(message["channel_id"]), message=message)


def message_payload(content: str, person: Person, channel_id: int = CHANNEL_ID,
                    mentions: list[dict] | None = None) -> dict[str, Any]:
    """MESSAGE_CREATE data for a message someone posts."""
    return {
        "id": snowflake(), "channel_id": str(channel_id), "guild_id": str(GUILD_ID),
        "author": user(person.id, person.name), "member": {k: v for k, v in person.member().items()
                                                           if k != "user"},
        "content": content, "timestamp": now_iso(), "edited_timestamp": None, "tts": False,
        "mention_everyone": False, "mentions": mentions or [], "mention_roles": [],
        "attachments": [], "embeds": [], "components": [], "pinned": False, "type": 0, "flags": 0,
    }
