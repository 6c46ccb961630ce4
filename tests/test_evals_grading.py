"""evals.grading: answer extraction, normalization and equivalence (a table of cases), bounded in time."""

from __future__ import annotations

import threading
import time

import pytest

from evals.grading import extract_answer, final_channel_text, is_equivalent, normalize_answer

# ------------------------------------------------------------------------------------------------ extraction

EXTRACT = [
    ("The answer is \\boxed{204}.", "204"),
    ("first \\boxed{1} then \\boxed{2}", "2"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\sqrt{\\frac{a}{b}}} done", "\\sqrt{\\frac{a}{b}}"),
    ("\\fbox{17}", "17"),
    ("\\boxed {  33 }", "33"),
    ("\\boxed{7} and a cut-off \\boxed{12", "7"),  # an unclosed box is skipped
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    ("no box here, answer 5", None),
    ("", None),
    (None, None),
    ("empty \\boxed{} only", None),  # an empty box is no answer
]


@pytest.mark.parametrize("text,expected", EXTRACT)
def test_extract_answer_last_brace_matched_box(text, expected):
    assert extract_answer(text) == expected


def test_final_channel_first_then_whole_transcript():
    t = (
        "<|channel|>analysis<|message|>maybe \\boxed{1}<|end|>"
        "<|start|>assistant<|channel|>final<|message|>so \\boxed{204}<|return|>"
    )
    assert final_channel_text(t) == "so \\boxed{204}"
    assert extract_answer(t) == "204"
    # the final channel wins even when a later box appears elsewhere in the transcript
    t2 = (
        "<|channel|>final<|message|>answer \\boxed{3}<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>double-check \\boxed{4}<|end|>"
    )
    assert extract_answer(t2) == "3"
    # no box in the final channel: fall back to the whole transcript
    t3 = "<|channel|>analysis<|message|>it is \\boxed{9}<|end|><|start|>assistant<|channel|>final<|message|>9<|return|>"
    assert extract_answer(t3) == "9"
    # explicit final text (Result.final_text) overrides the markers; '' means "no final message"
    assert extract_answer("whole \\boxed{5}", final_text="final \\boxed{6}") == "6"
    assert extract_answer("whole \\boxed{5}", final_text="") == "5"


# ------------------------------------------------------------------------------------------------ normalization


@pytest.mark.parametrize(
    "raw,norm",
    [
        ("025", "25"),
        ("$204$", "204"),
        ("\\boxed{17}", "17"),
        ("\\text{17}", "17"),
        ("17.", "17"),
        ("1,000", "1000"),
        ("10^\\circ", "10"),
        ("x = 5", "5"),
        ("+7", "7"),
        ("25.00", "25"),
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("  ", ""),
        (None, ""),
        ("1{,}234", "1234"),
        ("\\(42\\)", "42"),
        ("50\\%", "50"),
        ("\\pi r", "\\pi r"),
    ],
)
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


# ------------------------------------------------------------------------------------------------ equivalence

EQUIVALENT = [
    ("025", "25"),
    ("25", "25"),
    ("$204$", "204"),
    ("\\boxed{204}", "204"),
    ("\\frac12", "0.5"),
    ("\\frac{1}{2}", "0.5"),
    ("1/2", "\\frac{1}{2}"),
    ("0.5", "\\frac{1}{2}"),
    ("\\dfrac{3}{4}", "0.75"),
    ("(x+1)^2", "x^2+2x+1"),
    ("\\sqrt{18}", "3\\sqrt{2}"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("1,000", "1000"),
    ("25.0", "25"),
    ("10^\\circ", "10"),
    ("x=5", "5"),
    ("\\text{17}", "17"),
    ("17.", "17"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("2^{10}", "1024"),
    ("\\pi/2", "\\frac{\\pi}{2}"),
    ("0", "000"),
    ("\\frac{6}{8}", "\\frac{3}{4}"),
    ("3.0", "3"),
    ("\\$5", "5"),
]
NOT_EQUIVALENT = [
    ("24", "25"),
    ("026", "25"),
    ("\\frac{1}{3}", "0.5"),
    ("x^2", "x^3"),
    ("2\\sqrt{2}", "\\sqrt{6}"),
    ("", "25"),
    (None, "25"),
    ("25", None),
    ("a", "b"),
    ("1000", "100"),
    ("-5", "5"),
    ("(1,2)", "(2,1)"),
    ("\\frac{2}{3}", "\\frac{3}{2}"),
    ("204", "2040"),
    ("12", "1.2"),
    ("\\sqrt{2}", "1.41"),
    ("x+1", "x-1"),
    ("\\infty", "0"),
]


assert len(EQUIVALENT) + len(NOT_EQUIVALENT) >= 40


@pytest.mark.parametrize("predicted,expected", EQUIVALENT)
def test_equivalent(predicted, expected):
    assert is_equivalent(predicted, expected) is True


@pytest.mark.parametrize("predicted,expected", NOT_EQUIVALENT)
def test_not_equivalent(predicted, expected):
    assert is_equivalent(predicted, expected) is False


PATHOLOGICAL = "9^{9^{9^{9}}}+1"


def test_pathological_expression_is_bounded_in_main_thread():
    t0 = time.monotonic()
    assert is_equivalent(PATHOLOGICAL, "\\frac{5}{7}", timeout=1) is False
    assert time.monotonic() - t0 < 8


def test_grading_from_other_threads_is_bounded_and_correct():
    """Signals do not work off the main thread: a helper process does the math_verify part there."""
    out: dict = {}

    def work(i: int) -> None:
        out[i] = (
            is_equivalent(f"\\frac{{{i}}}{{2}}", str(i / 2)),  # needs math_verify
            is_equivalent(f"{i}^{{9^{{9^{{9}}}}}}", "\\frac{1}{3}", timeout=1),
        )  # pathological

    t0 = time.monotonic()
    threads = [threading.Thread(target=work, args=(i,)) for i in (3, 5, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == {3: (True, False), 5: (True, False), 7: (True, False)}
    assert time.monotonic() - t0 < 45
