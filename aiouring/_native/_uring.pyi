# Typed face of the cffi-generated module (its functions are declared in cdef.h).
from typing import Any

ffi: Any
lib: Any
