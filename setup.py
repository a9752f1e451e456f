"""The native module is built by cffi when the extension is built (a wheel, or
``pip install``); everything else is in pyproject.toml.

cffi runs aiouring/_native/build.py for every command, an sdist included, so
liburing's headers are looked for here, only when the extension is compiled:
an sdist builds on a machine without them.
"""
import os

from setuptools import setup
from setuptools.command.build_ext import build_ext


def _liburing_headers_found() -> bool:
    dirs = ["/usr/include", "/usr/local/include"]
    for var in ("CPATH", "C_INCLUDE_PATH"):
        dirs += os.environ.get(var, "").split(":")
    return any(d and os.path.exists(os.path.join(d, "liburing.h")) for d in dirs)


class BuildExt(build_ext):
    def run(self) -> None:
        if not _liburing_headers_found():
            raise SystemExit(
                "aiouring: liburing's headers (liburing.h) were not found, and the native module needs them.\n"
                "On Debian/Ubuntu install them with:  apt-get install liburing-dev\n"
                "(sh scripts/setup.sh does this for you; at run time the module needs liburing2)."
            )
        super().run()


setup(
    cffi_modules=["aiouring/_native/build.py:ffibuilder"],
    cmdclass={"build_ext": BuildExt},
)
