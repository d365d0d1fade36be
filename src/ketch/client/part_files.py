"""Hidden partial files beside a local file, renamed over it once a download is whole.

``get`` over an existing file and ``mirror`` download into ``.NAME.ketch-XXXXXXXX.part``
in the same directory, so a refused or broken download leaves the old file whole.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = ["open_part_file"]


def open_part_file(local: Path) -> tuple[Path, BinaryIO]:
    """Create (O_EXCL, no link followed) and open a new hidden part file beside ``local``.

    It takes the permission bits of the regular file at ``local``, if there is
    one. Raises OSError when it cannot be made.
    """
    shown = os.fsdecode(os.fsencode(local.name)[:100])  # room for the rest in NAME_MAX
    temp = local.with_name(f".{shown}.ketch-{secrets.token_hex(4)}.part")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(temp, flags, 0o666)
    file = os.fdopen(descriptor, "wb")
    try:
        old = local.lstat()
        if stat.S_ISREG(old.st_mode):  # keep its permission bits
            os.fchmod(file.fileno(), stat.S_IMODE(old.st_mode) & 0o777)
    except FileNotFoundError:
        pass
    except BaseException:
        file.close()
        temp.unlink(missing_ok=True)
        raise
    return temp, file
