"""Answer extraction: the content of the last brace-matched ``\\boxed{...}`` (or ``\\fbox{...}``)."""

from __future__ import annotations

import re

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_boxed(text: str | None) -> str | None:
    """Content of the last complete ``\\boxed{...}``/``\\fbox{...}`` in ``text``; None when there is none.

    Braces are matched, so nested groups survive; an unclosed or empty box is skipped.

    >>> extract_boxed(r"so \\boxed{\\frac{1}{2}} and finally \\boxed{204}.")
    '204'
    >>> extract_boxed(r"\\boxed{\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    >>> extract_boxed("no box") is None
    True
    >>> extract_boxed(r"\\boxed{12} then \\boxed{ }")
    '12'
    """
    if not text:
        return None
    for match in reversed(list(_BOX.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            ch = text[i]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    content = text[start:i].strip()
                    if content:
                        return content
                    break  # an empty box: look at the one before
    return None
