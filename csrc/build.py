"""cffi builder for uringtools._uring (API mode). Never imports uringtools.

Environment:
  URINGTOOLS_LINK=static   link liburing.a (default when it exists)
  URINGTOOLS_LINK=shared   link -luring (pkg-config when available)
"""

import os
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
STATIC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/liburing.a",
    "/usr/lib/aarch64-linux-gnu/liburing.a",
    "/usr/lib64/liburing.a",
    "/usr/lib/liburing.a",
    "/usr/local/lib/liburing.a",
)

ffibuilder = FFI()
ffibuilder.cdef((HERE / "uringtools.h").read_text())


def _source_kwargs() -> dict:
    mode = os.environ.get("URINGTOOLS_LINK", "static")
    if mode == "static":
        for candidate in STATIC_CANDIDATES:
            if os.path.exists(candidate):
                return {"extra_objects": [candidate]}
    return {"libraries": ["uring"]}


_source = (HERE / "uringtools.c").read_text()
_kwargs = _source_kwargs()
if "libraries" in _kwargs:
    try:
        ffibuilder.set_source_pkgconfig("uringtools._uring", ["liburing"], _source)
    except Exception:  # cffi.PkgConfigError or pkg-config missing
        ffibuilder.set_source("uringtools._uring", _source, **_kwargs)
else:
    ffibuilder.set_source("uringtools._uring", _source, **_kwargs)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
