"""Instructor uploads: check the type, size and name of a file, then save it safely."""

from __future__ import annotations

import math
import os
import re
import tempfile
import unicodedata
from pathlib import Path

from bot.errors import UserFacingError
from ingest.loaders import SkipFile, decode_text

ALLOWED_TYPES = {".pdf": "PDF", ".md": "Markdown", ".markdown": "Markdown", ".txt": "text"}
_UNSAFE = re.compile(r"[^\w.\- ]+", re.UNICODE)
MAX_NAME_CHARS = 100
# File systems limit a name to 255 bytes, and 100 characters of Japanese take 300 in UTF-8.
MAX_NAME_BYTES = 200
MEGABYTE = 1024 * 1024  # STUDY_ASSISTANT_DISCORD__UPLOAD_MAX_MB counts these
MAX_EXTENSION_CHARS = 10  # a longer "extension" is named cut in the refusal


class UploadRejected(UserFacingError):
    """The file cannot be accepted; the message says why."""


def safe_filename(name: str) -> str:
    """A harmless file name, or UploadRejected for names that try to leave the folder."""
    name = unicodedata.normalize("NFKC", name).strip()
    if not name or "/" in name or "\\" in name or "\x00" in name:
        raise UploadRejected("The file name must be a plain name, without folders.")
    if name.startswith(".") or name in (".", ".."):
        raise UploadRejected("The file name must not start with a dot.")
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or not ext:
        raise UploadRejected("The file needs an extension: .pdf, .md or .txt.")
    if len(ext) > MAX_EXTENSION_CHARS:
        kinds = ", ".join(sorted(ALLOWED_TYPES))
        raise UploadRejected(f"I can only ingest {kinds} files, not "
                             f"'.{ext[:MAX_EXTENSION_CHARS]}…'.")
    stem = _UNSAFE.sub("_", stem).strip(" ._")
    if not stem:
        # A name of emoji or signs only: a stand-in name would be the same for every such
        # file, and replacing "upload.md" could replace an unrelated one.
        raise UploadRejected("The file name has no letters or digits I can keep. Rename it "
                             "(e.g. notes.md) and upload it again.")
    stem = stem[: MAX_NAME_CHARS - len(ext) - 1]
    budget = MAX_NAME_BYTES - len(ext.encode()) - 1
    stem = stem.encode()[:budget].decode("utf-8", "ignore")  # whole characters only
    return f"{stem}.{ext.lower()}"


def check_type_and_size(name: str, size: int, max_bytes: int) -> str:
    """The safe name of an acceptable attachment, or UploadRejected saying why not."""
    safe = safe_filename(name)
    suffix = Path(safe).suffix
    if suffix not in ALLOWED_TYPES:
        kinds = ", ".join(sorted(ALLOWED_TYPES))
        raise UploadRejected(f"I can only ingest {kinds} files, not '{suffix}'.")
    if size > max_bytes:
        # Both in the limit's unit (MB of 2**20 bytes); the size rounded up, so that a file
        # over the limit never reads as within it.
        shown = math.ceil(size / MEGABYTE * 100) / 100
        raise UploadRejected(
            f"That file is {shown:.2f} MB; the limit is {max_bytes / MEGABYTE:g} MB."
        )
    if size == 0:
        raise UploadRejected("That file is empty.")
    return safe


def check_content(name: str, data: bytes) -> None:
    """The bytes must match the extension: a PDF header, or text as ingest decodes it (UTF-16
    with its BOM, UTF-8, cp1252…; no binary data)."""
    if Path(name).suffix == ".pdf":
        if not data.startswith(b"%PDF-"):
            raise UploadRejected("That file is named .pdf but is not a PDF.")
        return
    try:
        decode_text(data)
    except (SkipFile, UnicodeDecodeError):
        raise UploadRejected("That file is named as text but contains binary data.") from None


def destination(materials_dir: Path, folder: str, name: str, overwrite: bool) -> Path:
    """Where to save an upload: inside the materials folder; an existing file only if asked."""
    root = Path(materials_dir).resolve()
    target = (root / folder / name).resolve()
    if not target.is_relative_to(root):
        raise UploadRejected("The file name must be a plain name, without folders.")
    if target.exists() and not overwrite:
        raise UploadRejected(
            f"`{folder}/{name}` already exists. Upload again with `overwrite: True` to replace it."
        )
    return target


def replace_file(path: Path, data: bytes) -> bytes | None:
    """Save an upload atomically; return the bytes it replaced (None for a new file)."""
    previous = path.read_bytes() if path.exists() else None
    save_atomically(path, data)
    return previous


def undo_upload(path: Path, previous: bytes | None) -> None:
    """Put back what was there before an upload that ingest could not read."""
    if previous is None:
        path.unlink(missing_ok=True)
    else:
        save_atomically(path, previous)


def save_atomically(path: Path, data: bytes) -> None:
    """Write a file so that an ingest never sees it half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
