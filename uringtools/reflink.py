"""cp --reflink: share the source's blocks (FICLONE) instead of copying them.

GNU cp 9 clones by default (``--reflink=auto``) where the filesystem can
(XFS, btrfs, ...): a 1 GiB copy then takes a millisecond and no space.
No io_uring request clones, so a clone is one ioctl from the walk's
thread; the ring copies whatever cannot be cloned. A filesystem that
cannot clone costs nothing per file: its type (statfs) is looked at once
per device, and a source there is copied exactly as with
``--reflink=never``.
"""

from __future__ import annotations

import errno
import fcntl
import os
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Set

from ._uring import lib as _lib

#: _IOW(0x94, 9, int): make the destination share all the source's extents
FICLONE = 0x40049409

#: statfs f_type of the filesystems whose files may share extents: XFS,
#: btrfs, bcachefs, OCFS2, ZFS, NFS (4.2 CLONE), SMB (duplicate extents),
#: overlayfs (passes it down). Elsewhere auto does not try.
CLONING_FILESYSTEMS = frozenset({
    0x58465342, 0x9123683E, 0xCA451A4E, 0x7461636F, 0x2FC12FC1,
    0x6969, 0xFE534D42, 0xFF534D42, 0x794C7630,
})

#: the answers meaning "this filesystem cannot clone at all"
CANNOT_CLONE = (errno.EOPNOTSUPP, errno.ENOTTY, errno.ENOSYS)

MODES = ("auto", "always", "never")


class Cloner:
    """Decides per source device (and destination directory) whether to
    try a clone, and tries it.

    Args:
        mode: ``auto`` (clone where the filesystem can, else copy),
            ``always`` (clone or fail, as GNU's ``--reflink``), ``never``.
    """

    def __init__(self, mode: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"reflink mode {mode!r}")
        self.mode = mode
        #: source device -> whether its filesystem may clone
        self._device_clones: Dict[int, bool] = {}
        #: destination directory -> its device
        self._dir_device: Dict[str, int] = {}
        #: source devices a clone has been made from
        self._proven: Set[int] = set()

    def worth_trying(self, src_dev: int, src_path: str, dst_dir: str) -> bool:
        """Whether a regular file from ``src_path`` (on ``src_dev``) into
        ``dst_dir`` should be cloned first: always under ``always``; under
        ``auto`` only from a filesystem that may clone, into a directory on
        the same one (FICLONE never crosses filesystems)."""
        if self.mode != "auto":
            return self.mode == "always"
        clones = self._device_clones.get(src_dev)
        if clones is None:
            kind = _lib.ut_fs_type(os.fsencode(src_path))
            clones = self._device_clones[src_dev] = kind in CLONING_FILESYSTEMS
        if not clones:
            return False
        dev = self._dir_device.get(dst_dir)
        if dev is None:
            try:
                dev = self._dir_device[dst_dir] = os.stat(dst_dir or ".").st_dev
            except OSError:
                return False     # the copy will say what is wrong
        return dev == src_dev

    def clone(self, fd_in: int, fd_out: int, src_dev: int) -> int:
        """Make ``fd_out`` share ``fd_in``'s data; 0, or the errno. A
        filesystem that answers that it cannot clone is not asked again."""
        try:
            fcntl.ioctl(fd_out, FICLONE, fd_in)
        except OSError as exc:
            code = exc.errno or errno.EIO
            if code in CANNOT_CLONE:
                self.cannot(src_dev)
            return code
        self._proven.add(src_dev)
        return 0

    def proven(self, src_dev: int) -> bool:
        """Whether a clone from ``src_dev`` has been made (and it has not
        said since that it cannot clone): its directories can be cloned by
        two threads."""
        return src_dev in self._proven and self._device_clones.get(src_dev, True)

    def prove(self, src_dev: int) -> None:
        """A clone from ``src_dev`` was made."""
        self._proven.add(src_dev)

    def cannot(self, src_dev: int) -> None:
        """The filesystem of ``src_dev`` said it cannot clone: do not ask
        it again (auto copies from there as never does)."""
        self._device_clones[src_dev] = False
