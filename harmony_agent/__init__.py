"""gpt-oss with Python as a builtin, stateful tool, token by token on vLLM's offline engine.

>>> from harmony_agent import solve                                                    # doctest: +SKIP
>>> solve("What is 2**100 mod 7?", model="openai/gpt-oss-20b").answer                 # doctest: +SKIP
'2'
"""

from .agent import Agent, Task, solve
from .answer import extract_boxed
from .async_agent import AsyncAgent, AsyncVLLMEngine
from .config import LoopConfig, PromptConfig, Sampling
from .engine import Completion, Engine, Request, VLLMEngine, build_llm
from .errors import EngineError, EngineFailure, HarmonyAgentError, ToolRuntimeError, VocabularyError
from .prompt import render_prompt
from .result import Result, ToolCallRecord
from .rollout import Phase, Rollout
from .trajectory import Segment, Trajectory

__all__ = [
    "Agent",
    "Task",
    "solve",
    "LoopConfig",
    "Result",
    "ToolCallRecord",
    "Trajectory",
    "Segment",
    "PromptConfig",
    "render_prompt",
    "extract_boxed",
    "Engine",
    "Request",
    "Completion",
    "Sampling",
    "VLLMEngine",
    "build_llm",
    "HarmonyAgentError",
    "VocabularyError",
    "EngineError",
    "EngineFailure",
    "ToolRuntimeError",
    "Rollout",
    "Phase",
    "AsyncAgent",
    "AsyncVLLMEngine",
]
