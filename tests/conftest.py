"""Shared pytest setup: offline Harmony vocabulary and local AIME data from ../shared."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

if "TIKTOKEN_ENCODINGS_BASE" not in os.environ and (SHARED / "vocab" / "o200k_base.tiktoken").exists():
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(SHARED / "vocab")
if "HARMONY_EVAL_DATA" not in os.environ and (SHARED / "data").is_dir():
    os.environ["HARMONY_EVAL_DATA"] = str(SHARED / "data")
