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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import discord
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

APP_ID = 900000000000000001
GUILD_ID = 900000000000000010
CHANNEL_ID = 900000000000000020
OTHER_CHANNEL_ID = 900000000000000021
STRANGER_GUILD_ID = 900000000000000040  # a server the course did not configure
STRANGER_CHANNEL_ID = 900000000000000041
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
    status: int = 200

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


# What Discord says with each error status (the JSON body discord.py turns into an exception).
_ERROR_TEXT = {401: "Invalid Webhook Token", 403: "Missing Permissions", 404: "Unknown Message",
               429: "You are being rate limited.", 500: "Internal Server Error",
               502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass
class Fault:
    """Discord answering matching requests with an error status.

    The error is raised at the seam (`HTTPClient.request`, the webhook adapter) as the
    exception discord.py raises there once its own handling is done: 403 `Forbidden`, 404
    `NotFound`, 5xx `DiscordServerError` (discord.py has already retried 5xx for ~25 s), 401
    and 429 `HTTPException` (a 429 reaches the caller only when discord.py's own retries are
    exhausted or Cloudflare sent it). `code` is Discord's JSON error code (50027: invalid
    webhook token, i.e. an interaction token past its 15 minutes; 50013: missing permissions).
    """

    method: str
    path: str  # a regular expression the whole path must match
    status: int
    code: int = 0
    times: int | None = None  # None: every matching request
    when: Callable[[dict[str, Any]], bool] | None = None  # only requests with such payloads
    retry_after: float = 0.2

    def matches(self, method: str, path: str, payload: dict[str, Any]) -> bool:
        """Whether this fault answers the request (and uses up one of its times)."""
        if self.times == 0 or method != self.method or not re.fullmatch(self.path, path):
            return False
        if self.when is not None and not self.when(payload):
            return False
        if self.times is not None:
            self.times -= 1
        return True

    def error(self) -> discord.HTTPException:
        """The exception discord.py raises for this status."""
        body: dict[str, Any] = {"message": _ERROR_TEXT.get(self.status, "Error"),
                                "code": self.code}
        headers = {"Content-Type": "application/json"}
        if self.status == 429:
            body.update(retry_after=self.retry_after, **{"global": False})
            headers["Retry-After"] = str(self.retry_after)
        response = _ErrorResponse(self.status, body["message"], headers)
        kind = {403: discord.Forbidden, 404: discord.NotFound}.get(self.status)
        if kind is None:
            kind = discord.DiscordServerError if self.status >= 500 else discord.HTTPException
        return kind(response, body)  # type: ignore[arg-type]


@dataclass
class _ErrorResponse:
    """The parts of aiohttp's response that discord.HTTPException reads."""

    status: int
    reason: str
    headers: dict[str, str]


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
        self.faults: list[Fault] = []
        self.members: dict[int, dict[str, Any]] = {}  # users GET /guilds/{id}/members finds
        self.left_guilds: list[int] = []
        self.messages: dict[int, list[dict[str, Any]]] = {}
        self.threads: dict[int, dict[str, Any]] = {}  # the threads created, by id
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
        request = Recorded(method, path, payload, time.monotonic(), dict(params))
        self.requests.append(request)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        fault = next((f for f in self.faults if f.matches(method, path, payload)), None)
        if fault is not None:
            request.status = fault.status
            raise fault.error()
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
            (r"DELETE /webhooks/\d+/([^/]+)/messages/@original", self._delete_original),
            (r"GET /webhooks/\d+/([^/]+)/messages/@original", lambda p, q, t: self.originals[t]),
            (r"POST /webhooks/\d+/([^/]+)", self._followup),
            (r"POST /channels/(\d+)/messages", self._send),
            (r"PATCH /channels/(\d+)/messages/(\d+)", self._edit),
            (r"DELETE /channels/(\d+)/messages/(\d+)", self._delete),
            (r"POST /channels/(\d+)/messages/(\d+)/threads", self._thread),
            (r"POST /channels/(\d+)/threads", self._forum_post),
            (r"GET /channels/(\d+)", self._channel),
            (r"PATCH /channels/(\d+)", self._edit_thread),
            (r"GET /channels/(\d+)/messages", self._history),
            (r"GET /guilds/(\d+)/members/(\d+)", self._member),
            (r"DELETE /users/@me/guilds/(\d+)", self._leave),
            (r"POST /users/@me/channels", self._dm_channel),
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
            "pinned": False, "type": 0, "flags": body.get("flags", 0),
            **({"message_reference": body["message_reference"]}
               if body.get("message_reference") else {}),
            **extra,
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

    def _delete_original(self, payload: Any, params: dict, token: str) -> None:
        self.originals.pop(token, None)

    def _followup(self, payload: dict, params: dict, token: str) -> dict:
        return self.message(CHANNEL_ID, payload)

    def _send(self, payload: dict, params: dict, channel_id: str) -> dict:
        return self._store(self.message(int(channel_id), payload))

    def _delete(self, payload: Any, params: dict, channel_id: str, message_id: str) -> None:
        kept = [m for m in self.messages.get(int(channel_id), []) if m["id"] != message_id]
        self.messages[int(channel_id)] = kept

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
        self.threads[int(thread["id"])] = thread
        # Discord then sends THREAD_CREATE over the gateway.
        asyncio.get_running_loop().call_soon(self.state.parse_thread_create, dict(thread))
        return thread

    def _forum_post(self, payload: dict, params: dict, channel_id: str) -> dict:
        """A forum post: a thread whose first message has the thread's id."""
        thread = self._thread(payload, params, channel_id, snowflake())
        starter = self._store(self.message(int(thread["id"]), payload.get("message") or {}))
        starter["id"] = thread["id"]
        return {**thread, "message": starter}

    def _edit_thread(self, payload: dict, params: dict, channel_id: str) -> dict:
        """PATCH /channels/{id} of a thread the bot created (a rename)."""
        thread = self.threads[int(channel_id)]
        thread.update({k: v for k, v in payload.items() if k == "name"})
        return dict(thread)

    def _channel(self, payload: dict, params: dict, channel_id: str) -> dict:
        """GET /channels/{id}: only channels the client does not know are fetched here, and
        Discord knows no more of them."""
        raise Fault("GET", ".*", 404, 10003).error()  # Unknown Channel

    def _history(self, payload: dict, params: dict, channel_id: str) -> list[dict]:
        """Newest first: the latest `limit` before `before`, or the first `limit` after
        `after`, as Discord answers."""
        messages = self.messages.get(int(channel_id), [])
        before = int(params.get("before") or 1 << 63)
        after = int(params.get("after") or 0)
        found = [m for m in messages if after < int(m["id"]) < before]
        limit = int(params.get("limit") or 50)
        return list(reversed(found[:limit] if "after" in params else found[-limit:]))

    def _member(self, payload: dict, params: dict, guild_id: str, user_id: str) -> dict:
        if int(user_id) not in self.members:
            raise Fault("GET", ".*", 404, 10013).error()  # Unknown Member
        return self.members[int(user_id)]

    def _leave(self, payload: dict, params: dict, guild_id: str) -> None:
        self.left_guilds.append(int(guild_id))

    def _dm_channel(self, payload: dict, params: dict) -> dict:
        recipient = int(payload["recipient_id"])
        return {"id": str(recipient + 1), "type": 1, "last_message_id": None,
                "recipients": [user(recipient)]}

    # -- assertions helpers ------------------------------------------------------------------
    def sent_messages(self) -> list[Recorded]:
        """Every request that sent or edited a message."""
        return [r for r in self.requests if r.message is not None]

    def delivered(self) -> list[Recorded]:
        """Every message sent or edited that Discord accepted."""
        return [r for r in self.sent_messages() if r.status == 200]


def _components(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(body.get("components") or [])


def guild_payload(instructor_role_name: str = "Instructor", guild_id: int = GUILD_ID,
                  channel_ids: tuple[int, int] = (CHANNEL_ID, OTHER_CHANNEL_ID)) -> dict[str, Any]:
    """GUILD_CREATE data: a course server with two text channels and two roles."""
    def role(role_id: int, name: str, position: int) -> dict[str, Any]:
        return {"id": str(role_id), "name": name, "permissions": STUDENT_PERMISSIONS,
                "position": position, "color": 0, "hoist": False, "managed": False,
                "mentionable": False, "flags": 0}

    def channel(channel_id: int, name: str) -> dict[str, Any]:
        return {"id": str(channel_id), "type": 0, "name": name, "position": 0,
                "permission_overwrites": [], "nsfw": False, "parent_id": None,
                "guild_id": str(guild_id), "rate_limit_per_user": 0, "topic": None}

    return {
        "id": str(guild_id), "name": "LLM course", "icon": None, "owner_id": "1",
        "roles": [role(guild_id, "@everyone", 0), role(STUDENT_ROLE, "Student", 1),
                  role(INSTRUCTOR_ROLE, instructor_role_name, 2)],
        "channels": [channel(channel_ids[0], "study"), channel(channel_ids[1], "off-topic")],
        "threads": [], "members": [], "emojis": [], "stickers": [], "features": [],
        "member_count": 3, "large": False, "unavailable": False, "verification_level": 0,
        "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0,
        "premium_tier": 0, "preferred_locale": "en-US", "nsfw_level": 0, "system_channel_flags": 0,
    }


def channel_payload(channel_id: int, name: str, parent_id: int | None = None,
                    category: bool = False) -> dict[str, Any]:
    """CHANNEL_CREATE data: a text channel of the course server (in the category `parent_id`
    when given), or with `category` a category."""
    return {"id": str(channel_id), "type": 4 if category else 0, "name": name, "position": 5,
            "permission_overwrites": [], "nsfw": False,
            "parent_id": None if parent_id is None else str(parent_id),
            "guild_id": str(GUILD_ID), "rate_limit_per_user": 0, "topic": None}


def thread_payload(thread_id: int, parent_id: int, owner_id: int) -> dict[str, Any]:
    """THREAD_CREATE data: a public thread in the channel `parent_id`."""
    return {"id": str(thread_id), "type": 11, "guild_id": str(GUILD_ID), "name": "q",
            "parent_id": str(parent_id), "owner_id": str(owner_id), "last_message_id": None,
            "rate_limit_per_user": 0, "message_count": 0, "member_count": 1, "flags": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                "archive_timestamp": now_iso(), "locked": False}}


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


def elsewhere(payload: dict[str, Any], guild_id: int = STRANGER_GUILD_ID,
              channel_id: int = STRANGER_CHANNEL_ID) -> dict[str, Any]:
    """The same interaction or message, sent from another server."""
    payload = json.loads(json.dumps(payload))
    payload["guild_id"] = str(guild_id)
    payload["channel_id"] = str(channel_id)
    if "channel" in payload:
        payload["channel"] = {"id": str(channel_id), "type": 0, "guild_id": str(guild_id)}
    if isinstance(payload.get("data"), dict) and "guild_id" in payload["data"]:
        payload["data"]["guild_id"] = str(guild_id)
    if "authorizing_integration_owners" in payload:
        payload["authorizing_integration_owners"] = {"0": str(guild_id)}
    return payload


def button_payload(message: dict[str, Any], custom_id: str, person: Person) -> dict[str, Any]:
    """INTERACTION_CREATE data for a click on a button of a message."""
    data = {"custom_id": custom_id, "component_type": 2}
    return _interaction(3, data, person, int(message["channel_id"]), message=message)


def dm_button_payload(message: dict[str, Any], custom_id: str, person: Person) -> dict[str, Any]:
    """INTERACTION_CREATE data for a click on a button of a message in a direct message."""
    payload = button_payload(message, custom_id, person)
    for key in ("guild_id", "member", "guild_locale"):
        payload.pop(key)
    payload["user"] = user(person.id, person.name)
    payload["channel"] = {"id": message["channel_id"], "type": 1}
    payload["context"] = 1
    payload["authorizing_integration_owners"] = {"1": str(person.id)}
    return payload


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
