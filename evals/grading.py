"""Answer extraction and grading: the last brace-matched ``\\boxed{}``, normalization, then math_verify.

Grading is bounded in time from any thread: in the main thread math_verify's own signal-based timeouts
apply; in other threads (where signals cannot be used) the check runs in a helper subprocess that is
killed when it overruns. Integers, the AIME case, are compared without math_verify at all.
"""

from __future__ import annotations

import atexit
import functools
import json
import math
import os
import re
import selectors
import subprocess
import sys
import threading

from harmony_agent.answer import extract_boxed  # the one brace-matched extractor (docs/architecture.md)

__all__ = ["extract_boxed", "extract_answer", "final_channel_text", "normalize_answer", "is_equivalent"]

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")

_FINAL_RE = re.compile(
    r"<\|channel\|>\s*final\b[^<]*(?:<\|constrain\|>[^<]*)?<\|message\|>(.*?)"
    r"(?=<\|end\|>|<\|return\|>|<\|call\|>|<\|start\|>|$)",
    re.DOTALL,
)


def final_channel_text(text: str | None) -> str | None:
    """Text of the Harmony final-channel messages in a rendered transcript, or None if there are none."""
    if not text:
        return None
    parts = _FINAL_RE.findall(text)
    return "\n".join(parts) if parts else None


def extract_answer(text: str | None, final_text: str | None = None) -> str | None:
    """The answer: last ``\\boxed{}`` of the final channel first, then of the whole transcript (None if none).

    `final_text` is the final-channel text when the caller has it (``Result.final_text``); otherwise the
    final channel is found from the Harmony markers in `text`.
    """
    final = final_text if final_text is not None else final_channel_text(text)
    answer = extract_boxed(final) if final else None
    if not answer and text:
        answer = extract_boxed(text)
    return answer or None  # an empty box is no answer


# ---------------------------------------------------------------------------------------------- normalization

_WRAPPERS_RE = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_LATEX_SPACES_RE = re.compile(r"\\[,;:! ]|\\q?quad\b|~")
_DEGREES_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ\b|\\%|%|\\\$")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(?:(?:,|\{,\})\d{3})+(?:\.\d+)?$")
_INT_RE = re.compile(r"^[+-]?\d+(?:\.0*)?$")
_ASSIGN_RE = re.compile(r"^[A-Za-z]\s*=\s*(?=\S)")
_SPACE_RE = re.compile(r"(?<![A-Za-z])\s+|\s+(?![A-Za-z])")


def _strip_math_delimiters(s: str) -> str:
    changed = True
    while changed and s:
        changed = False
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)].strip()
                changed = True
        inner = _whole_box(s)
        if inner is not None:
            s, changed = inner, True
    return s


def _whole_box(s: str) -> str | None:
    """Inner text when `s` is exactly one ``\\boxed{...}``, else None."""
    m = _BOX_RE.match(s)
    if m and s.endswith("}"):
        inner = extract_boxed(s)
        if inner is not None and len(inner) <= len(s) and s[m.end() : -1].strip() == inner:
            return inner
    return None


def normalize_answer(answer: str | None) -> str:
    """Canonical text of an answer, for equality and majority voting ("025" -> "25", "$204$" -> "204").

    Strips math delimiters, a whole ``\\boxed{}``, ``\\text{}``-style wrappers, LaTeX spacing, ``\\left``/``\\right``,
    degree and percent signs, a trailing period, a leading ``x =``, thousands separators; integers are
    written canonically. Returns "" for None or blank.
    """
    if answer is None:
        return ""
    s = str(answer).strip()
    s = _strip_math_delimiters(s)
    for _ in range(3):
        s = _WRAPPERS_RE.sub(r"\1", s)
    s = _LATEX_SPACES_RE.sub(" ", s)
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _DEGREES_RE.sub("", s)
    s = s.strip().rstrip(".").strip()
    s = _strip_math_delimiters(s)
    s = _ASSIGN_RE.sub("", s)
    s = _SPACE_RE.sub("", s.strip())
    if _THOUSANDS_RE.match(s):
        s = s.replace("{,}", "").replace(",", "")
    if _INT_RE.match(s):
        s = str(int(s.split(".")[0]))
    return s


# ---------------------------------------------------------------------------------------------- equivalence

_CANON_INT_RE = re.compile(r"^-?\d+$")


def is_equivalent(predicted: str | None, expected: str | None, *, timeout: float = 5.0) -> bool:
    """Whether `predicted` equals `expected` mathematically: normalization, then math_verify.

    Bounded in time: each math_verify step gets `timeout` seconds (rounded up to whole seconds); a
    comparison that overruns counts as not equivalent. Safe to call from any thread.
    """
    if predicted is None or expected is None:
        return False
    return _equivalent_normalized(normalize_answer(predicted), normalize_answer(expected), float(timeout))


@functools.lru_cache(maxsize=4096)
def _equivalent_normalized(p: str, e: str, timeout: float) -> bool:
    if not p or not e:
        return False
    if p == e:
        return True
    if _CANON_INT_RE.match(p) and _CANON_INT_RE.match(e):
        return False
    seconds = max(1, math.ceil(timeout))
    if threading.current_thread() is threading.main_thread():
        return verify_in_process(p, e, seconds)
    return _WORKER.verify(p, e, seconds)


def verify_in_process(predicted: str, expected: str, seconds: int) -> bool:
    """math_verify with its own (SIGALRM) timeouts; main thread only."""
    from math_verify import parse, verify

    gold = parse("\\boxed{" + expected + "}", parsing_timeout=seconds)
    pred = parse("\\boxed{" + predicted + "}", parsing_timeout=seconds)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=seconds))


class _GradeWorker:
    """A helper subprocess running math_verify in its own main thread; killed when it overruns."""

    STARTUP_SECONDS = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._started = False
        atexit.register(self.close)

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._started = False
        return subprocess.Popen(
            [sys.executable, "-m", "evals._grade_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )

    def verify(self, predicted: str, expected: str, seconds: int) -> bool:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            # parse gold + parse pred + verify, each bounded by `seconds` inside the worker; plus slack.
            deadline = 3 * seconds + 2.0 + (0.0 if self._started else self.STARTUP_SECONDS)
            try:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write((json.dumps({"p": predicted, "e": expected, "s": seconds}) + "\n").encode())
                proc.stdin.flush()
                with selectors.DefaultSelector() as sel:
                    sel.register(proc.stdout, selectors.EVENT_READ)
                    if not sel.select(timeout=deadline):
                        raise TimeoutError
                line = proc.stdout.readline()
                if not line:
                    raise EOFError
                self._started = True
                return bool(json.loads(line)["ok"])
            except (OSError, ValueError, KeyError, TimeoutError, EOFError):
                self._kill()
                return False

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        with self._lock:
            self._kill()


_WORKER = _GradeWorker()
