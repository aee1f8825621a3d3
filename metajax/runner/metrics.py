"""The run's ``metrics.jsonl``: one JSON object per line, appended atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def append(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Appends records with one ``write`` on an ``O_APPEND`` descriptor, then ``fsync``.

    A process killed mid-write leaves at most a partial last line, which
    :func:`read` skips.
    """
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
    if not data:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size and not _ends_with_newline(path):
            data = b"\n" + data  # a previous writer died mid-line; keep our lines whole
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read(path: Path) -> list[dict[str, Any]]:
    """All complete records; a truncated or corrupt line (a killed writer) is skipped."""
    if not Path(path).exists():
        return []
    records = []
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                continue
            try:
                record = json.loads(line)
            except ValueError:  # JSONDecodeError, or UnicodeDecodeError from bytes a killed writer left
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def truncate_after(path: Path, step: int) -> None:
    """Keeps only records with ``step <= step`` (atomic rewrite), so a resumed run never duplicates a line."""
    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read(path) if not isinstance(r.get("step"), (int, float)) or r["step"] <= step]
    write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to a temporary file and renames it over ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, value: Any) -> None:
    """Atomically writes ``value`` as indented JSON."""
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")
