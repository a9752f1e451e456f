"""cffi build script for aiouring's native module (API mode, against liburing).

Declarative on purpose: the cdef is `cdef.h` plus `cdef_offload.h`, the C is
`helpers.c` and `offload.c`; this file only wires them together.  cffi runs
it for every setup.py command, an sdist included, so it needs no liburing:
setup.py's build_ext checks for the headers before compiling.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))


def _read(name: str) -> str:
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


ffibuilder = FFI()
ffibuilder.cdef(_read("cdef.h") + "\n" + _read("cdef_offload.h"))
ffibuilder.set_source(
    "aiouring._native._uring",
    '#include "helpers.h"\n#include "offload.h"\n',
    sources=[os.path.relpath(os.path.join(HERE, name)) for name in ("helpers.c", "offload.c")],
    include_dirs=[os.path.relpath(HERE)],
    libraries=["uring"],
    extra_compile_args=["-O2", "-Wall"] + os.environ.get("AIOURING_CFLAGS", "").split(),
    extra_link_args=os.environ.get("AIOURING_LDFLAGS", "").split(),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
