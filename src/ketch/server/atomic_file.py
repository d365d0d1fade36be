"""A file that replaces its target only when it is complete.

An atomic upload writes to a hidden temporary file in the target's own
directory (``.ketch-upload-<random>.<name>.part``, created with O_EXCL) and
renames it over the target with ``os.replace`` once the transfer has
completed. Until then readers of the target see the old file, whole; a
failed upload only ever removes its own temporary file.

The rename is atomic for other processes, not a promise about power loss:
there is no fsync, so after a crash the new file may be empty on some
filesystems (the old one is gone either way).

Replacing makes a new inode: the new file gets the old one's permission
bits (and owner and group where the server may set them), but hard links
to the old file keep the old content.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from typing import BinaryIO

from ketch.server.client_text import log_field
from ketch.server.jail import UPLOAD_TEMP_PREFIX, Place

__all__ = ["AtomicFile", "adopt_attributes", "temporary_name"]

log = logging.getLogger("ketch.server")

# At most this many bytes of the final name go into the temporary one, so
# that a name near NAME_MAX (255 bytes) still has room for prefix and suffix.
_NAME_BYTES = 120


def temporary_name(final_name: str) -> str:
    """A fresh hidden name for an upload that will become ``final_name``."""
    shown = os.fsdecode(os.fsencode(final_name)[:_NAME_BYTES])
    return f"{UPLOAD_TEMP_PREFIX}{secrets.token_hex(6)}.{shown}.part"


def adopt_attributes(fd: int, existing: os.stat_result) -> None:
    """Give a replacement file the permission bits, owner and group of the file it replaces.

    Only the 0o777 bits are copied: a setuid bit must not carry over to
    uploaded content. A change of owner the process may not make is skipped.
    """
    info = os.fstat(fd)
    if (info.st_uid, info.st_gid) != (existing.st_uid, existing.st_gid):
        with contextlib.suppress(PermissionError):
            os.fchown(fd, existing.st_uid, existing.st_gid)
    os.fchmod(fd, stat.S_IMODE(existing.st_mode) & 0o777)


class AtomicFile:
    """An open temporary file that becomes ``place``'s name on :meth:`commit`.

    The temporary file ``temp`` is in the same directory, which the AtomicFile
    holds (see ``Jail.place``) until :meth:`commit` or :meth:`discard`: the
    rename acts there even if a path to it has been swapped meanwhile.
    ``placeholder`` is the stat of an empty file the upload itself created
    at the target to reserve the name (STOU): it counts as no file when
    committing, and :meth:`discard` removes it again.
    """

    def __init__(
        self,
        file: BinaryIO,
        place: Place,
        temp: str,
        *,
        placeholder: os.stat_result | None = None,
    ) -> None:
        self.file = file
        self._place = place
        self._temp = temp
        self._placeholder = placeholder
        self._finished = False

    def commit(self) -> tuple[int, int | None]:
        """Put the file in place; return its size and the size of the file it replaced.

        The replaced size is None when no regular file was there (or only the
        placeholder). Raises OSError if the rename fails; :meth:`discard`
        then still removes the temporary file.
        """
        size = os.fstat(self.file.fileno()).st_size
        self.file.close()
        replaced = self._replaced_size()
        place = self._place
        os.replace(self._temp, place.name, src_dir_fd=place.dir_fd, dst_dir_fd=place.dir_fd)
        self._finished = True
        place.close()
        return size, replaced

    def _replaced_size(self) -> int | None:
        try:
            info = self._place.stat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(info.st_mode) or self._is_placeholder(info):
            return None
        return info.st_size

    def _is_placeholder(self, info: os.stat_result) -> bool:
        reserved = self._placeholder
        return (
            reserved is not None
            and (info.st_dev, info.st_ino) == (reserved.st_dev, reserved.st_ino)
            and info.st_size == 0
        )

    def discard(self) -> None:
        """Close and remove the temporary file (and the placeholder); the target stays as it was."""
        if self._finished:
            return
        self._finished = True
        self.file.close()
        place = self._place
        try:
            os.unlink(self._temp, dir_fd=place.dir_fd)
        except FileNotFoundError:
            pass
        except OSError as error:
            shown = os.path.join(os.path.dirname(place.real), self._temp)
            # The name is the client's: a field, so it cannot forge one (see client_text).
            log.warning(
                "cannot remove the temporary upload file path=%s: %s",
                log_field(shown),
                error.strerror or error,
            )
        if self._placeholder is not None:
            with contextlib.suppress(OSError):
                if self._is_placeholder(place.stat()):
                    os.unlink(place.name, dir_fd=place.dir_fd)
        place.close()
