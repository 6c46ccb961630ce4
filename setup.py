"""Installs ``harmony_agent_cpu_guard.pth`` beside the packages (see harmony_agent_cpu_guard.py for why).

Everything else is in pyproject.toml. A ``.pth`` file must sit in site-packages itself, which setuptools has no
setting for: regular wheels get it through ``build_py``, editable installs (``pip install -e``) through the
editable wheel's install directory. Should a future setuptools stop calling the hook, the install still works,
only without the guard.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = "harmony_agent_cpu_guard.pth"
PTH_LINE = "import harmony_agent_cpu_guard; harmony_agent_cpu_guard.install()\n"


class BuildPyWithGuard(build_py):
    def run(self) -> None:
        super().run()
        Path(self.build_lib, PTH).write_text(PTH_LINE)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib, PTH))]


class EditableWheelWithGuard(editable_wheel):
    def _install_namespaces(self, installation_dir, pth_prefix):  # the editable wheel's site-packages
        super()._install_namespaces(installation_dir, pth_prefix)
        Path(installation_dir, PTH).write_text(PTH_LINE)


setup(cmdclass={"build_py": BuildPyWithGuard, "editable_wheel": EditableWheelWithGuard})
