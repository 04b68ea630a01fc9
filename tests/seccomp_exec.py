"""Run a command with io_uring_setup failing: ``seccomp_exec.py ERRNO CMD...``.

Installs a seccomp BPF filter (ctypes + prctl) that makes io_uring_setup
return -ERRNO (a name such as EPERM, or a number), lets every other system
call through, then execs CMD. The filter checks the architecture field, so
only the native syscall table is matched.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000

# classic BPF opcodes
BPF_LD_W_ABS = 0x20   # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x15      # BPF_JMP | BPF_JEQ | BPF_K
BPF_RET_K = 0x06      # BPF_RET | BPF_K

# machine -> (AUDIT_ARCH_*, __NR_io_uring_setup)
ARCHES = {
    "x86_64": (0xC000003E, 425),
    "aarch64": (0xC00000B7, 425),
}
OFFSET_NR = 0      # struct seccomp_data.nr
OFFSET_ARCH = 4    # struct seccomp_data.arch


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]


def install(err: int) -> None:
    """Make io_uring_setup fail with ``err`` for this process and its children."""
    arch, nr = ARCHES[platform.machine()]
    prog = [
        (BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
        (BPF_JEQ_K, 1, 0, arch),          # native arch: go on, else allow
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        (BPF_LD_W_ABS, 0, 0, OFFSET_NR),
        (BPF_JEQ_K, 0, 1, nr),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | (err & 0xFFFF)),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    filters = (SockFilter * len(prog))(*[SockFilter(*ins) for ins in prog])
    fprog = SockFprog(len(prog), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def parse_errno(text: str) -> int:
    if text.isdigit():
        return int(text)
    return getattr(errno, text)


def main(argv: list) -> None:
    if len(argv) < 3:
        sys.stderr.write(f"usage: {argv[0]} ERRNO COMMAND [ARG]...\n")
        raise SystemExit(2)
    install(parse_errno(argv[1]))
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    assert struct.calcsize("P") == 8, "64-bit only"
    main(sys.argv)
