"""harmony_agent_cpu_guard: CUDA builds of torchvision/torchaudio/torchcodec beside a CPU-only torch look absent.

Fake packages on sys.path stand in for the real ones (the real case, PyPI's torchvision 0.28.0 beside
torch 2.13.0+cpu, was checked in a fresh venv: `from vllm import LLM` fails without the guard, works with it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import harmony_agent_cpu_guard as guard

ROOT = Path(__file__).resolve().parent.parent


def _package(site: Path, name: str, libraries: dict[str, bytes]) -> None:
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    for rel, data in libraries.items():
        (site / name / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / name / rel).write_bytes(data)


def _site(tmp_path: Path, torch_cuda: bool) -> Path:
    site = tmp_path / "site"
    _package(site, "torch", {"lib/libc10.so": b"\x7fELF cpu"} | ({"lib/libc10_cuda.so": b"x"} if torch_cuda else {}))
    _package(site, "torchvision", {"_C.so": b"\x7fELF ... libc10.so\0libc10_cuda.so\0libcudart.so.13\0"})
    _package(site, "torchaudio", {"lib/libtorchaudio.so": b"\x7fELF ... libtorch_cuda.so\0"})
    _package(site, "torchcodec", {"libtorchcodec_core.so": b"\x7fELF ... libc10.so\0libavcodec.so\0"})  # CPU build
    return site


def test_cuda_builds_beside_a_cpu_torch_are_hidden_and_cpu_builds_are_not(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_site(tmp_path, torch_cuda=False)))
    assert guard.hidden_packages() == ["torchvision", "torchaudio"]


def test_nothing_is_hidden_beside_a_cuda_torch(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_site(tmp_path, torch_cuda=True)))
    assert guard.hidden_packages() == []


@pytest.mark.parametrize("switch", ["1", "0"])
def test_install_makes_them_absent_for_find_spec_and_import(tmp_path, switch):
    site = _site(tmp_path, torch_cuda=False)
    code = (
        "import importlib.util, harmony_agent_cpu_guard as g; g.install()\n"
        "print(importlib.util.find_spec('torchvision') is None, importlib.util.find_spec('torchcodec') is None)\n"
        "try:\n    import torchaudio\nexcept ImportError as e:\n    print(type(e).__name__)\n"
        "except RuntimeError:\n    print('RuntimeError')\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "HARMONY_AGENT_CPU_GUARD": switch}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    if switch == "1":
        assert out.stdout.split() == ["True", "False", "ModuleNotFoundError"]  # like transformers sees it
    else:
        assert out.stdout.split() == ["False", "False", "RuntimeError"]  # the failure the guard prevents


def test_the_wheel_installs_the_pth_file_that_runs_the_guard(tmp_path):
    src = tmp_path / "src"  # a copy of what the build reads: the build writes build/ and *.egg-info beside it
    for name in ("pyproject.toml", "setup.py", "README.md", "harmony_agent_cpu_guard.py"):
        src.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, src / name)
    for package in ("harmony_agent", "tool_runtime", "evals"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), src],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    [wheel] = tmp_path.glob("harmony_agent-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        pth = zf.read("harmony_agent_cpu_guard.pth").decode()
    assert "harmony_agent_cpu_guard.py" in names  # beside the .pth, at the root of site-packages
    assert pth.startswith("import harmony_agent_cpu_guard;") and "install()" in pth
