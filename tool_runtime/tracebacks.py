"""Error texts of a cell, as the seed's sandbox (NeMo-Skills) showed them to the model.

That sandbox ran IPython 8 in "Plain" mode and then dropped every line starting with `File <ipython-`, so a
traceback lists, for frames of the cell itself, only their source lines; frames of library files keep their
`File path:line in name` line. Exception names are unqualified (`LinAlgError`, not `numpy.linalg.LinAlgError`)
and chained exceptions come first, earliest first. This module writes that text itself, so it does not depend
on the IPython version installed here (IPython 9 formats differently).

Two deliberate differences: frames of IPython's own machinery (`run_code`) are never shown (the seed showed one
for a SyntaxError raised at run time), and very deep tracebacks are shortened (runs of one repeated frame as
CPython does, then the middle) so that the error line survives the output limit.
"""

from __future__ import annotations

import builtins
import linecache
import os
import traceback
from types import TracebackType

CELL_FILE_PREFIX = "<ipython-input-"  # IPython's file name of a cell; its location lines are not shown
HEADER = "Traceback (most recent call last):\n"
DIRECT_CAUSE = "\nThe above exception was the direct cause of the following exception:\n"
DURING_HANDLING = "\nDuring handling of the above exception, another exception occurred:\n"
EXCEPTION_ONLY_HEADER = "An exception has occurred, use %tb to see the full traceback.\n"

REPEAT_CUTOFF = 3  # identical consecutive frames shown before "[Previous line repeated N more times]"
MAX_FRAMES = 50  # above this many entries, only the first and last KEEP_FRAMES are shown
KEEP_FRAMES = 3

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_GROUPS = getattr(builtins, "BaseExceptionGroup", ())  # Python >= 3.11


def format_exception(exc: BaseException, hide_prefixes: tuple[str, ...] = ()) -> str:
    """The full text for `exc` with its chain; leading frames from files under `hide_prefixes` (IPython's
    run_code) and frames of this package are left out."""
    if isinstance(exc, _GROUPS):
        return _format_group(exc, hide_prefixes)
    seen: set[int] = set()
    return _format_chain(exc, hide_prefixes, seen)


def format_exception_only(exc: BaseException) -> str:
    """What IPython printed for an exception shown without traceback (SystemExit)."""
    return EXCEPTION_ONLY_HEADER + "".join(exception_lines(exc))


def _format_chain(exc: BaseException, hide_prefixes: tuple[str, ...], seen: set[int]) -> str:
    seen.add(id(exc))
    text = _format_single(exc, hide_prefixes)
    cause = exc.__cause__
    inner = cause if cause is not None else (None if exc.__suppress_context__ else exc.__context__)
    if inner is None or id(inner) in seen:
        return text
    message = DIRECT_CAUSE if cause is not None else DURING_HANDLING
    return _format_chain(inner, (), seen) + message + text


def _format_single(exc: BaseException, hide_prefixes: tuple[str, ...]) -> str:
    entries = _entries(exc.__traceback__, hide_prefixes)
    parts = [HEADER, *_format_entries(entries)] if entries else []
    parts.extend(exception_lines(exc))
    return "".join(parts)


def _entries(tb: TracebackType | None, hide_prefixes: tuple[str, ...]) -> list:
    """(filename, lineno, name, frame globals) per frame, or a str already formatted (an omission marker)."""
    raw = []
    while tb is not None:
        frame = tb.tb_frame
        code = frame.f_code
        if not code.co_filename.startswith(_PACKAGE_DIR):
            raw.append((code.co_filename, tb.tb_lineno, code.co_name, frame.f_globals))
        tb = tb.tb_next
    if hide_prefixes:
        first = 0
        while first < len(raw) and raw[first][0].startswith(hide_prefixes):
            first += 1
        if first < len(raw):
            raw = raw[first:]
    return _shorten(_collapse_repeats(raw))


def _collapse_repeats(raw: list) -> list:
    out: list = []
    last, count = None, 0
    for entry in raw:
        key = entry[:3]
        if key == last:
            count += 1
        else:
            if count > REPEAT_CUTOFF:
                out.append(_repeated(count - REPEAT_CUTOFF))
            last, count = key, 1
        if count <= REPEAT_CUTOFF:
            out.append(entry)
    if count > REPEAT_CUTOFF:
        out.append(_repeated(count - REPEAT_CUTOFF))
    return out


def _repeated(n: int) -> str:
    return f"  [Previous line repeated {n} more time{'s' if n > 1 else ''}]\n"


def _shorten(entries: list) -> list:
    if len(entries) <= MAX_FRAMES:
        return entries
    omitted = sum(1 for e in entries[KEEP_FRAMES:-KEEP_FRAMES] if not isinstance(e, str))
    return [*entries[:KEEP_FRAMES], f"  [... {omitted} frames omitted ...]\n", *entries[-KEEP_FRAMES:]]


def _format_entries(entries: list) -> list[str]:
    out = []
    for entry in entries:
        if isinstance(entry, str):
            out.append(entry)
            continue
        filename, lineno, name, globs = entry
        if not filename.startswith(CELL_FILE_PREFIX):
            where = f"  File {filename}" if lineno is None else f"  File {filename}:{lineno}"
            out.append(where + ("\n" if name == "<module>" else f" in {name}\n"))
        if lineno is not None:
            linecache.lazycache(filename, globs)
            line = linecache.getline(filename, lineno).strip()
            if line:
                out.append(f"    {line}\n")
    return out


def exception_lines(exc: BaseException) -> list[str]:
    """The lines after the frames: for a SyntaxError its location, source line and caret, then `Name: message`
    (`.msg` when the exception has one, as IPython 8 did) and any PEP 678 notes."""
    name = type(exc).__name__
    out = []
    if isinstance(exc, SyntaxError):
        filename = exc.filename or "<string>"
        lineno = exc.lineno or None
        textline: str | None = linecache.getline(filename, lineno) if lineno else ""
        if not filename.startswith(CELL_FILE_PREFIX):
            out.append(f"  File {filename}\n" if lineno is None else f"  File {filename}:{lineno}\n")
        if textline == "":
            textline = exc.text
        if textline is not None:
            indent = len(textline) - len(textline.lstrip())
            out.append(f"    {textline.strip()}\n")
            if exc.offset is not None:
                pad = "".join(c if c.isspace() else " " for c in textline[indent : exc.offset - 1])
                out.append(f"    {pad}^\n")
    try:
        message = exc.msg  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - most exceptions have no .msg
        message = safe_str(exc)
    out.append(f"{name}: {message}\n" if message else f"{name}\n")
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, (list, tuple)):
        out.extend(f"{note}\n" for note in notes)
    return out


def safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break the error report
        return f"<unprintable {type(exc).__name__} object>"


def _format_group(exc: BaseException, hide_prefixes: tuple[str, ...]) -> str:
    """Exception groups: IPython 8 fell back to Python's own format; so do we (without IPython's frame)."""
    tb = exc.__traceback__
    while tb is not None and hide_prefixes and tb.tb_frame.f_code.co_filename.startswith(hide_prefixes):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))
