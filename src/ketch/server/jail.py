"""Confine a user to their home directory.

Two steps keep a client inside its home. ``resolve_virtual`` turns whatever
the client typed into a clean absolute *virtual* path, clipping ``..`` at
"/" the way chroot does, so no path the server handles ever names a parent
of the home. ``Jail.real_path`` then maps that virtual path onto the disk
and checks, after resolving symlinks, that the result is still inside the
home: a symlink placed by a local user must not become a way out.

A check on path strings alone leaves a race: between the check and the use,
a local user who can write inside the home could swap a directory on the
path for a symlink to somewhere else, and the kernel would follow it.
``Jail.place`` closes it. It opens the checked path's directory and asks
the kernel (``/proc/self/fd``) where that descriptor really is; the
operation then acts on a single name relative to the descriptor, without
following a symlink in it. Whatever is swapped after that is not looked at.

The filesystem errors live here rather than in ``filesystem`` because the
jail is the lower layer and raises them; ``filesystem`` re-exports them.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path
from types import TracebackType

from ketch.server.os_errors import error_text

__all__ = [
    "UPLOAD_TEMP_PREFIX",
    "FilesystemError",
    "Jail",
    "PathEscapeError",
    "Place",
    "descriptor_path",
    "link_stays_inside",
    "names_home",
    "resolve_virtual",
    "virtual_path_in",
]

#: Names of the temporary files of uploads in progress (see ketch.server.atomic_file).
#: Clients can neither see nor name them, so nobody reads, replaces or deletes a
#: half-written upload; a name with this prefix is refused in every path.
UPLOAD_TEMP_PREFIX = ".ketch-upload-"

log = logging.getLogger("ketch.server")

# A directory held only as a place to act in: O_PATH needs no read permission (Linux).
_DIRECTORY_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
# Where the kernel tells which path a descriptor has. Without /proc (some containers)
# the place is not checked again: the jail is then as good as its string check.
_FD_PATHS = "/proc/self/fd"


class FilesystemError(Exception):
    """A file operation failed; ``str(error)`` is the text for the 550 reply.

    The text names the *virtual* path only, never a real one, so it can be
    sent to the client as it is. When the OS refused, the error is made as
    ``FilesystemError(text, errno, virtual)``: ``errno`` says why and
    ``virtual`` is the path, for the log (see os_errors.CLIENT_ERRORS); a
    refusal of the server's own (a reserved name, say) has ``errno`` None.

    The facts ride in ``args``, without an ``__init__`` of ours: a missing name
    is an everyday failure (STOR asks whether its target is a directory), and a
    Python-level ``__init__`` would double what each costs.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    @property
    def errno(self) -> int | None:
        """The OS's error number behind the refusal; None if the OS did not refuse."""
        code: int | None = self.args[1] if len(self.args) > 2 else None
        return code

    @property
    def virtual(self) -> str:
        """The virtual path refused (for the log); "" unless given."""
        path: str = self.args[2] if len(self.args) > 2 else ""
        return path


class PathEscapeError(FilesystemError):
    """The path leads outside the user's home, usually through a symlink."""

    def __init__(self, virtual: str) -> None:
        super().__init__(
            f"{virtual}: Permission denied (outside your home directory)", None, virtual
        )


def _check_encodable(virtual: str) -> None:
    """Refuse names the OS cannot take, as a FilesystemError rather than a ValueError.

    A NUL byte ends a C string, and a lone surrogate that did not come from
    surrogateescape decoding has no byte form; ``os`` raises ValueError for
    both, which would otherwise escape as a crash instead of a 550 reply.
    """
    try:
        encoded = os.fsencode(virtual)
    except UnicodeEncodeError:
        encoded = None
    if encoded is None or b"\0" in encoded:
        # Shown escaped: the reply must not carry the very characters refused.
        shown = virtual.encode("utf-8", "backslashreplace").decode().replace("\0", "\\x00")
        raise FilesystemError(
            f"{shown}: invalid file name "
            "(NUL bytes and unpaired surrogates cannot be stored); choose another name"
        )


def _components(path: str) -> list[str]:
    """The meaningful parts of a path; "", "." and ".." are applied, not kept."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            # Clipping at the root is what makes ".." harmless.
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return parts


def names_home(argument: str) -> bool:
    """Whether a client's path starts at its home: "~" alone, or a leading "~/".

    RFC 959 has no home-relative paths; proftpd and pure-ftpd read these as the
    login directory, and clients send them (curl sends ``CWD ~`` for
    ``ftp://host/~/file``). "~user" is not one: there is no other user's home to
    name. "./~" names an entry called "~".
    """
    return argument == "~" or argument.startswith("~/")


def resolve_virtual(cwd: str, argument: str) -> str:
    """The normalized absolute virtual path ``argument`` names, seen from ``cwd``.

    ``..`` never climbs above "/", an empty argument means ``cwd``, and "~" or
    "~/..." start at the home, "/" (see :func:`names_home`): ``~/../x`` is ``/x``.
    """
    if names_home(argument):
        argument = "/" + argument[1:]
    combined = argument if argument.startswith("/") else f"{cwd}/{argument}"
    return "/" + "/".join(_components(combined))


class Jail:
    """Maps virtual paths to real ones inside ``home`` and refuses the rest."""

    def __init__(self, home: Path) -> None:
        real_home = os.path.realpath(home)
        if not os.path.isdir(real_home):
            # A server-side misconfiguration, so the real path may be named.
            raise NotADirectoryError(
                f"home directory {str(home)!r} does not exist or is not a directory; "
                "create it or fix the 'home'/'root' setting in the configuration"
            )
        self._home = real_home
        # The prefix every path inside the home starts with ("/" is special).
        self._prefix = real_home if real_home.endswith(os.sep) else real_home + os.sep

    @property
    def home(self) -> Path:
        """The real, symlink-free home directory."""
        return Path(self._home)

    @property
    def home_text(self) -> str:
        """``home`` as the string it is kept as (no Path made)."""
        return self._home

    def contains(self, real: str) -> bool:
        """Whether an already resolved real path lies inside the home."""
        return real == self._home or real.startswith(self._prefix)

    def real_path(self, virtual: str, *, follow_final: bool = True) -> str:
        """The real path for ``virtual``, checked to stay inside the home.

        With ``follow_final=False`` a symlink in the last component is not
        followed, so the link itself can be removed, renamed or lstat'ed even
        when it points outside. Missing trailing components are allowed
        (they are about to be created); ``os.path.realpath`` resolves the
        existing part and appends the rest. The returned path is the resolved
        one, which narrows the window for symlink swaps between check and use.
        """
        _check_encodable(virtual)
        parts = _components(virtual)  # re-normalize: never trust the caller blindly
        if any(part.startswith(UPLOAD_TEMP_PREFIX) for part in parts):
            raise FilesystemError(
                f"{virtual}: names starting with {UPLOAD_TEMP_PREFIX!r} are reserved "
                "for uploads in progress; choose another name"
            )
        if not parts:
            return self._home
        if follow_final:
            resolved = self._resolve(parts)
        else:
            resolved = os.path.join(self._resolve(parts[:-1]), parts[-1])
        if not self.contains(resolved):
            raise PathEscapeError(virtual)
        return resolved

    def _resolve(self, parts: list[str]) -> str:
        """``os.path.realpath`` of ``parts`` under the home, without re-resolving the home.

        The home is a real path already, so while no component below it is a
        symlink, the real path is the components joined: one ``lstat`` each,
        instead of realpath's walk over every component from ``/`` (the
        dearest step of a short session). At the first symlink the whole
        path goes to ``os.path.realpath`` as before; at the first missing
        component the rest is appended, as realpath does.
        """
        path = self._home
        for index, part in enumerate(parts):
            path = os.path.join(path, part)
            try:
                mode = os.lstat(path).st_mode
            except OSError:  # missing (or unreadable): nothing below it can be a link
                return os.path.join(path, *parts[index + 1 :])
            if stat.S_ISLNK(mode):
                return os.path.realpath(os.path.join(self._home, *parts))
        return path

    def place(self, virtual: str, *, follow_final: bool = True) -> Place:
        """Where an operation on ``virtual`` acts: its directory, held open and checked.

        The directory is opened after the check of :meth:`real_path` and then
        checked again on the descriptor, so a component swapped for a symlink
        in between is refused. The home itself is the name "." in itself. The
        caller acts with ``dir_fd`` and ``name`` and never follows a symlink
        in ``name`` (the check resolved it, so one there now was swapped in).
        """
        real = self.real_path(virtual, follow_final=follow_final)
        directory, name = (real, ".") if real == self._home else os.path.split(real)
        try:
            fd = os.open(directory, _DIRECTORY_FLAGS)
        except OSError as error:
            text, code = error_text(error.errno), error.errno or errno.EIO
            raise FilesystemError(f"{virtual}: {text}", code, virtual) from error
        try:
            where = os.readlink(f"{_FD_PATHS}/{fd}")
        except FileNotFoundError:
            _warn_without_proc()
        except BaseException as error:
            os.close(fd)
            if isinstance(error, OSError):
                text, code = error_text(error.errno), error.errno or errno.EIO
                raise FilesystemError(f"{virtual}: {text}", code, virtual) from error
            raise
        else:
            if not self.contains(where):
                os.close(fd)
                raise PathEscapeError(virtual)
        return Place(fd, name, real)


def virtual_path_in(home: str, real: str) -> str | None:
    """The virtual path of ``real`` inside the real, symlink-free ``home``, or None if outside.

    A function, not a Jail method: the listing workers (see listing_worker)
    show link targets with only the home's path at hand.
    """
    normalized = os.path.normpath(real)
    prefix = home if home.endswith(os.sep) else home + os.sep
    if normalized != home and not normalized.startswith(prefix):
        return None
    return "/" + normalized[len(home) :].strip("/")


def link_stays_inside(home: str, directory: str | None, target: str) -> bool:
    """Whether the target of a link in ``directory`` keeps inside the real ``home``.

    ``directory`` is real and inside the home (None: unknown, and then no
    relative target can be said to stay inside). The target must stay inside
    as written: an absolute one lies in the home, and a relative one never
    climbs above it on the way (``../../other-customer/private`` names what
    is outside even if it came back). It must also lead inside when followed
    as the jail would (see :func:`_followed_inside`).
    """
    if os.path.isabs(target):
        return virtual_path_in(home, target) is not None and _followed_inside(home, "/", target)
    if directory is None:
        return False
    depth = 0 if directory == home else directory.count("/") - home.rstrip("/").count("/")
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in ("", "."):
            depth += 1
    return _followed_inside(home, directory, target)


def _followed_inside(home: str, start: str, target: str) -> bool:
    """Whether ``os.path.realpath`` of ``target`` from the real ``start`` lies inside ``home``.

    The walk of ``Jail._resolve``: the home and its parents are real
    directories and are not looked at, every other component gets one
    ``lstat``, and at the first symlink realpath takes over.
    """
    prefix = home if home.endswith(os.sep) else home + os.sep
    path = start
    parts = target.split("/")
    for index, part in enumerate(parts):
        if part in ("", "."):
            continue
        if part == "..":
            path = os.path.dirname(path)  # what realpath does: path has no link in it
            continue
        path = os.path.join(path, part)
        if path != home and not prefix.startswith(path + os.sep) and _is_link(path):
            path = os.path.realpath(os.path.join(path, *parts[index + 1 :]))
            break
    return path == home or path.startswith(prefix)


def _is_link(path: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:  # missing or unreadable: taken as it is written, as realpath does
        return False


def descriptor_path(fd: int) -> str | None:
    """Where the kernel says the descriptor ``fd`` is, or None without /proc."""
    try:
        return os.readlink(f"{_FD_PATHS}/{fd}")
    except OSError:
        return None


def _warn_without_proc() -> None:
    """Say once per process that places cannot be checked again (no /proc)."""
    if not _ProcWarning.given:
        _ProcWarning.given = True
        log.warning(
            "%s is missing (is /proc mounted?): the jail cannot check the directories "
            "it acts in, so a local user who can swap a directory for a symlink while a "
            "command runs could get out of a home; mount /proc for the server",
            _FD_PATHS,
        )


class _ProcWarning:
    given = False


class Place:
    """A checked directory held open, and the name an operation acts on in it.

    A context manager: the descriptor is closed at the end of the ``with``.
    """

    __slots__ = ("dir_fd", "name", "real")

    def __init__(self, dir_fd: int, name: str, real: str) -> None:
        self.dir_fd = dir_fd
        self.name = name
        #: The checked real path, for messages and the few path-based calls left.
        self.real = real

    def __enter__(self) -> Place:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def stat(self) -> os.stat_result:
        """The facts of the name itself: a symlink there is reported as one, not followed."""
        return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)

    def close(self) -> None:
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1
