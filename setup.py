"""Two install steps that pyproject.toml has no setting for; everything else is there.

1. ``harmony_agent_cpu_guard.pth`` beside the packages (see harmony_agent_cpu_guard.py for why). A ``.pth`` file
   must sit in site-packages itself: regular wheels get it through ``build_py``, editable installs
   (``pip install -e``) through the editable wheel's install directory.
2. ``tool_runtime/_reaper``, compiled from ``tool_runtime/reaper.c`` with the machine's C compiler: each tool
   session's PID 1 (see reaper.c for why it is native). Regular wheels carry it; editable installs build it in
   the source tree. Without a compiler the install goes on and sessions use a Python reaper (about 2 MiB more
   per session; ``SessionPool().info["isolation"]["notes"]["reaper"]`` says so).

Should a future setuptools stop calling these hooks, the install still works, only without them.
"""

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = "harmony_agent_cpu_guard.pth"
PTH_LINE = "import harmony_agent_cpu_guard; harmony_agent_cpu_guard.install()\n"
REAPER_SOURCE = Path("tool_runtime", "reaper.c")
REAPER = Path("tool_runtime", "_reaper")


def build_reaper(out: Path) -> bool:
    """Compile reaper.c into `out`; on failure say why (the runtime falls back to a Python reaper)."""
    cc = shlex.split(os.environ.get("CC", "")) or [shutil.which("cc") or shutil.which("gcc") or ""]
    if not cc[0] or not REAPER_SOURCE.exists():
        print(f"warning: no C compiler (set CC): {REAPER} not built; tool sessions use a Python reaper")
        out.unlink(missing_ok=True)
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)  # a failed build must not leave an older binary behind
    cmd = [*cc, "-O2", "-Wall", "-Wextra", "-o", str(out), str(REAPER_SOURCE)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"warning: {shlex.join(cmd)} failed: {done.stderr.strip()[-2000:]}")
        print(f"warning: {REAPER} not built; tool sessions use a Python reaper")
        return False
    return True


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # the packages stay in the source tree: so does the binary
            build_reaper(REAPER)
            return
        Path(self.build_lib, PTH).write_text(PTH_LINE)
        self._reaper_built = build_reaper(Path(self.build_lib, REAPER))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        extra = [str(Path(self.build_lib, PTH))]
        if getattr(self, "_reaper_built", False):
            extra.append(str(Path(self.build_lib, REAPER)))
        return [*super().get_outputs(include_bytecode), *extra]


class EditableWheelWithGuard(editable_wheel):
    def _install_namespaces(self, installation_dir, pth_prefix):  # the editable wheel's site-packages
        super()._install_namespaces(installation_dir, pth_prefix)
        Path(installation_dir, PTH).write_text(PTH_LINE)


setup(cmdclass={"build_py": BuildPy, "editable_wheel": EditableWheelWithGuard})
