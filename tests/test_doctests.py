"""The examples in harmony_agent's docstrings run and say what the code does."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["agent", "answer", "config", "encoding", "parsing", "prompt", "tool_messages", "trajectory"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"harmony_agent.{name}")
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
