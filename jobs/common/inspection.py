"""Whole-file inspection results, shared by the CSV and the XML landing formats."""
from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from dataclasses import dataclass

from schemas import reason_codes as R


@dataclass(frozen=True)
class Inspection:
    sha256: str
    record_count: int | None
    header: list[str] | None
    reason_code: str | None = None
    reason_detail: str | None = None


def decompressed(name: str, content: bytes) -> tuple[str, bytes, Inspection | None]:
    """(sha256 of the bytes as landed, the file's data, a rejection if it has none or cannot be unzipped)."""
    sha = hashlib.sha256(content).hexdigest()
    if len(content) == 0:
        return sha, b"", Inspection(sha, 0, None, R.EMPTY_FILE, "file has no bytes")
    if not name.endswith(".gz"):
        return sha, content, None
    try:
        return sha, gzip.GzipFile(fileobj=io.BytesIO(content)).read(), None
    except (OSError, EOFError, zlib.error) as exc:
        return sha, b"", Inspection(sha, None, None, R.BAD_GZIP, f"gzip stream unreadable: {exc}")
