"""What an OS error on the server's file system means to an FTP client, and what to do.

Replies carry the OS's own wording (``No such file or directory``), which
people and scripts know, followed by a next step where the client can take
one. The jail and the filesystem layer word their 550s with it.
"""

from __future__ import annotations

import errno
import os

__all__ = ["CLIENT_ERRORS", "error_text", "listing_error_text"]

#: What to do about the errors a client can cause, after the OS's wording of each.
_ADVICE = {
    errno.ENOENT: "check the name (LIST shows what is there)",
    errno.EEXIST: "choose another name, or delete that one first",
    errno.ENOTEMPTY: "delete what is in it first",
    errno.ENOTDIR: "a name on the path is a file; check the path",
    errno.EISDIR: "name a file",
    errno.EACCES: "the server's file permissions forbid it; ask its admin",
    errno.EPERM: "the server's file permissions forbid it; ask its admin",
    errno.ELOOP: "a symbolic link on the path loops; ask the server's admin",
    errno.ENAMETOOLONG: "choose a shorter name",
    errno.EINVAL: "not possible for this path (a directory cannot move into itself)",
    errno.EXDEV: "they are on different file systems of the server; copy it instead",
    errno.ENOSPC: "the server's disk is full; ask its admin",
    errno.EDQUOT: "the server's disk quota is used up; ask its admin",
    errno.EROFS: "the server's file system is read-only; ask its admin",
    errno.EBUSY: "the server is using it; try again later",
}


#: The errors a client causes by what it asks (a name that is not there, or is taken):
#: its 550 says all there is, and clients probe for files all day, so the log has
#: them at DEBUG only. Any other (permissions, a link loop, a full disk, I/O) is the
#: admin's to fix and logged as a warning.
CLIENT_ERRORS = frozenset(
    {
        errno.ENOENT,
        errno.EEXIST,
        errno.ENOTEMPTY,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENAMETOOLONG,
        errno.EINVAL,
        errno.EXDEV,
    }
)

#: What to do when a listing is refused: it reads the directory's names (r) and looks each up (x).
_LISTING_DENIED = (
    "the server may not read or search this directory (a listing needs r and x permission "
    "on it); ask its admin"
)


def error_text(code: int | None) -> str:
    """The OS's wording for an errno, and what to do when the client can do something."""
    if not code:
        return "Input/output error; try again, or ask the server's admin"
    advice = _ADVICE.get(code)
    return f"{os.strerror(code)}; {advice}" if advice else os.strerror(code)


def listing_error_text(code: int | None) -> str:
    """``error_text`` for a listing of a directory: a refusal says what the directory lacks."""
    if code == errno.EACCES:
        return f"{os.strerror(code)}; {_LISTING_DENIED}"
    return error_text(code)
