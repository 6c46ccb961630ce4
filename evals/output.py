"""Resumable JSONL output: one line per finished sample, appended, flushed and fsynced as it finishes.

While a seed's file is being filled it is only appended to, in finish order. A line counts once it ends with
a newline: a kill in the middle of a write leaves a torn last line, which readers ignore and writers cut off
before appending again, so a finished sample is never lost and never written twice. Once the file holds every
problem it is rewritten in input order (a new file, fsynced, renamed over the old one: a kill leaves either
file whole), because NeMo-Skills pairs the samples of the ``output-rs*.jsonl`` files by line number. Each
writer holds an exclusive lock on its file so two runs cannot interleave in one file (the lock dies with its
process, even on SIGKILL).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from evals.errors import EvalError

__all__ = ["read_records", "JsonlAppender", "SampleStore", "check_run_config", "write_json_atomic", "seed_files"]

_SEED_FILE_RE = re.compile(r"^output-rs(\d+)\.jsonl$")
logger = logging.getLogger(__name__)


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_tmp(path: Path) -> None:
    """Delete temporary files a killed rewrite of `path` left behind (a live rewrite holds a lock on its own)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        finally:
            os.close(fd)
        tmp.unlink(missing_ok=True)


def _scan(path: Path) -> tuple[list[tuple[dict, bytes]], int, str | None]:
    """Parse `path`: ([(record, its line's bytes)], byte length of the good prefix, torn-tail note or None)."""
    data = path.read_bytes()
    entries: list[tuple[dict, bytes]] = []
    good = 0
    pos = 0
    lineno = 0
    while pos < len(data):
        lineno += 1
        nl = data.find(b"\n", pos)
        if nl < 0:
            return entries, good, f"line {lineno} has no newline (torn write)"
        raw = data[pos:nl]
        if raw.strip():
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                if nl == len(data) - 1:
                    return entries, good, f"line {lineno} is not valid JSON (torn write)"
                raise EvalError(
                    f"{path}:{lineno}: corrupt output line ({e}); delete that line and run again "
                    "(its sample will be redone)"
                ) from None
            entries.append((rec, raw + b"\n"))
        pos = nl + 1
        good = pos
    return entries, good, None


def read_records(path: str | os.PathLike) -> list[dict]:
    """Records of an output file; a torn last line (kill mid-write) is ignored, never an error."""
    p = Path(path)
    if not p.exists():
        return []
    return [rec for rec, _raw in _scan(p)[0]]


class JsonlAppender:
    """Appends JSON lines to one file durably (write + flush + fsync per line) under an exclusive lock."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise EvalError(
                f"{self.path} is being written by another running process; wait for it or use another --output-dir"
            ) from None
        _remove_stale_tmp(self.path)
        _records, good, torn = _scan(self.path)
        if torn is not None:
            os.ftruncate(self._fd, good)
            os.fsync(self._fd)
            logger.warning("%s: %s; cut it off, that sample will be redone", self.path, torn)

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record as one line; returns once it is on disk."""
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def rewrite(self, lines: Sequence[bytes]) -> None:
        """Replace the file's content by `lines` (each ending with a newline) atomically: a new locked file is
        written, fsynced and renamed over this one; appends then go to the new file."""
        tmp = _tmp_path(self.path)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            for line in lines:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)
        old, self._fd = self._fd, fd
        os.close(old)

    def close(self) -> None:
        """Release the file (and its lock); a file left empty, e.g. by a run that failed to start, is removed."""
        if self._fd >= 0:
            try:
                if os.fstat(self._fd).st_size == 0:
                    self.path.unlink()
            except OSError:
                pass
            os.close(self._fd)  # releases the lock
            self._fd = -1

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def seed_files(directory: str | os.PathLike) -> dict[int, Path]:
    """``{seed: path}`` of the ``output-rs<seed>.jsonl`` files in a folder."""
    d = Path(directory)
    out: dict[int, Path] = {}
    if d.is_dir():
        for p in d.iterdir():
            m = _SEED_FILE_RE.match(p.name)
            if m:
                out[int(m.group(1))] = p
    return dict(sorted(out.items()))


class SampleStore:
    """The ``output-rs<seed>.jsonl`` files of one folder: what is done, and appending what finishes.

    A record belongs to (``id``, seed); a repeated (id, seed) line, e.g. from a hand merge, counts once.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self._writers: dict[int, JsonlAppender] = {}

    def path(self, seed: int) -> Path:
        return self.directory / f"output-rs{seed}.jsonl"

    def records(self, seed: int) -> list[dict]:
        seen: set[str] = set()
        out = []
        for rec in read_records(self.path(seed)):
            rid = str(rec.get("id"))
            if rid not in seen:
                seen.add(rid)
                out.append(rec)
        return out

    def done_ids(self, seed: int) -> set[str]:
        return {str(r.get("id")) for r in read_records(self.path(seed))}

    def all_records(self) -> Iterator[dict]:
        """Every record of every seed file, each with its ``seed``."""
        for seed in seed_files(self.directory):
            for rec in self.records(seed):
                rec.setdefault("seed", seed)
                yield rec

    def open(self, seed: int) -> JsonlAppender:
        """The appender for `seed` (opened, locked and repaired on first use)."""
        if seed not in self._writers:
            self._writers[seed] = JsonlAppender(self.path(seed))
        return self._writers[seed]

    def append(self, seed: int, record: Mapping[str, Any]) -> None:
        self.open(seed).append(record)

    def put_in_order(self, seed: int, ids: Sequence[str]) -> bool:
        """When the seed's file holds every id of `ids`, make its lines follow `ids` (lines of other ids after
        them, as they were), rewriting it atomically if needed. Returns whether the file is complete.

        A file with a repeated id (e.g. a hand merge) is left as it is, with a warning: nothing is dropped."""
        path = self.path(seed)
        if not path.exists():
            return not ids
        if _starts_with(path, ids):
            return True
        if not set(ids) <= self.done_ids(seed):
            return False
        writer = self.open(seed)  # the lock: nobody appends while the lines move
        entries = _scan(path)[0]
        rank = {rid: i for i, rid in enumerate(ids)}
        file_ids = [str(rec.get("id")) for rec, _raw in entries]
        if len(set(file_ids)) != len(file_ids):
            logger.warning("%s repeats an id; left in its order (NeMo-Skills pairs lines by number)", path)
            return True
        order = sorted(range(len(entries)), key=lambda i: (rank.get(file_ids[i], len(rank)), i))
        if order != list(range(len(entries))):
            writer.rewrite([entries[i][1] for i in order])
        return True

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()


def _starts_with(path: Path, ids: Sequence[str]) -> bool:
    """Whether the file's lines start with exactly `ids`, in that order, and no id repeats."""
    file_ids = [str(r.get("id")) for r in read_records(path)]
    return file_ids[: len(ids)] == list(ids) and len(set(file_ids)) == len(file_ids)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON through a temporary file and rename, so readers never see half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(p)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def check_run_config(directory: str | os.PathLike, config: Mapping[str, Any], *, write: bool = True) -> None:
    """Refuse to add samples made with other settings to a folder; with `write`, record them.

    The settings live in ``run-config.json``. Resuming with, say, another model or temperature into the
    same folder would silently average two different experiments, so it is an error naming the first
    differing setting. A folder without samples yet takes the new settings (a failed start is no commitment).
    """
    path = Path(directory) / "run-config.json"
    current = json.loads(json.dumps(dict(config)))  # JSON-normalized (tuples -> lists, ...)
    has_samples = any(p.stat().st_size > 0 for p in seed_files(directory).values())
    if path.exists() and has_samples:
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            stored = None
        if isinstance(stored, dict):
            for key in sorted(set(stored) | set(current)):
                if stored.get(key) != current.get(key):
                    raise EvalError(
                        f"{directory} holds samples made with {key}={stored.get(key)!r}, this run has "
                        f"{key}={current.get(key)!r}; use another --output-dir (or the same settings)"
                    )
            return
    if write:
        write_json_atomic(path, current)
