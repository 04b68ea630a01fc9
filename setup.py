"""Build hooks: the cffi module (csrc/build.py), and the four commands as
C launchers (csrc/launcher.c) beside the Python entry script
scripts/_uringtools, installed with it by setuptools' build_scripts."""

import os
import shlex
import subprocess
import sysconfig

from setuptools import setup
from setuptools.dist import Distribution

COMMANDS = ("uring-cat", "uring-cp", "uring-hash", "uringtools")
LAUNCHER = os.path.join("csrc", "launcher.c")

_build_scripts = Distribution().get_command_class("build_scripts")


class build_scripts(_build_scripts):  # type: ignore[misc,valid-type]
    """Copy scripts/_uringtools as usual, then compile one launcher per
    command into the same build directory."""

    def run(self) -> None:
        super().run()
        # always rebuilt (four small compiles): a build/ left from another
        # CC, flags or source must not install stale launchers
        cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC")
                         or "cc")
        flags = [word for var in ("CPPFLAGS", "CFLAGS", "LDFLAGS")
                 for word in shlex.split(os.environ.get(var, ""))]
        self.mkpath(self.build_dir)
        for name in COMMANDS:
            out = os.path.join(self.build_dir, name)
            cmd = [*cc, "-O2", "-Wall", *flags, f'-DCOMMAND="{name}"',
                   "-o", out, LAUNCHER]
            self.announce(" ".join(cmd), level=2)
            subprocess.run(cmd, check=True)


setup(cffi_modules=["csrc/build.py:ffibuilder"],
      cmdclass={"build_scripts": build_scripts})
