"""The only way the server touches files.

Sessions see a ``Filesystem`` and never call ``os`` themselves, so every
access goes through the jail and a later backend (object storage, say) can
replace ``LocalFilesystem`` without touching the protocol code.

Paths are *virtual*: absolute, normalized POSIX strings relative to the
user's home, possibly carrying surrogate escapes for names that are not
UTF-8. On Linux ``os`` encodes str paths with UTF-8 + surrogateescape, so
such names map back to their original bytes unchanged.

Every failure becomes a ``FilesystemError`` whose text names the virtual
path and the OS reason, ready for a 550 reply and never revealing where the
home really is.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from ketch.protocol.listing import FileFacts, ListLineMaker
from ketch.protocol.mlsx import MlsxEntry
from ketch.server.atomic_file import AtomicFile, adopt_attributes, temporary_name
from ketch.server.jail import UPLOAD_TEMP_PREFIX, FilesystemError, Jail, PathEscapeError
from ketch.server.mlsx_scan import mlsx_entry, scan_directory, scan_mlsx

__all__ = [
    "Filesystem",
    "FilesystemError",
    "LocalFilesystem",
    "PathEscapeError",
]

# Mode for new files and directories; the process umask narrows it as usual.
_NEW_FILE_MODE = 0o666
_NEW_DIR_MODE = 0o777
# STOU gives up after this many taken names rather than looping for ever.
_MAX_UNIQUE_ATTEMPTS = 10_000
# Random temporary names for atomic uploads practically never collide.
_MAX_TEMPORARY_ATTEMPTS = 100
# O_NONBLOCK keeps open() from waiting for a FIFO's other end; O_NOFOLLOW
# makes a symlink swapped in after the jail check fail instead of being used.
_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK | os.O_NOFOLLOW


class Filesystem(Protocol):
    """What a session may do with files; all paths are virtual."""

    def stat(self, path: str) -> FileFacts:
        """Facts about ``path``, following symlinks that stay inside the home."""
        ...

    def lstat(self, path: str) -> FileFacts:
        """Facts about ``path`` itself; a symlink is reported as a link."""
        ...

    def list_dir(self, path: str) -> list[FileFacts]:
        """The entries of a directory sorted by name; links are not followed."""
        ...

    def list_lines(self, path: str, now: float) -> list[str]:
        """LIST's ``ls -l`` lines for a directory's entries: ``list_dir``, formatted as read."""
        ...

    def list_names(self, path: str) -> list[str]:
        """The names of a directory's entries, sorted: ``list_dir`` without a stat each."""
        ...

    def is_dir(self, path: str) -> bool:
        """Whether ``path`` is a reachable directory; never raises."""
        ...

    def is_file(self, path: str) -> bool:
        """Whether ``path`` is a reachable regular file; never raises."""
        ...

    def open_read(self, path: str) -> BinaryIO:
        """An unbuffered regular file opened for reading."""
        ...

    def open_write(self, path: str, *, offset: int = 0, append: bool = False) -> BinaryIO:
        """An unbuffered regular file opened for writing at ``offset`` or the end."""
        ...

    def create_unique(self, directory: str, stem: str) -> tuple[str, BinaryIO]:
        """A new file named ``stem`` or ``stem.N`` and its virtual path."""
        ...

    def open_atomic_write(self, path: str, *, placeholder: bool = False) -> AtomicFile:
        """A hidden temporary file that replaces ``path`` when committed.

        ``placeholder``: ``path`` is an empty file this upload created to
        reserve the name (STOU), removed again if the upload fails.
        """
        ...

    def mkdir(self, path: str) -> None:
        """Create a directory."""
        ...

    def rmdir(self, path: str) -> None:
        """Remove an empty directory."""
        ...

    def remove(self, path: str) -> None:
        """Remove a file or a symlink (never a directory)."""
        ...

    def rename(self, source: str, target: str) -> None:
        """Rename ``source`` to ``target``, replacing a file already there."""
        ...

    def chmod(self, path: str, mode: int) -> None:
        """Change permission bits (0o000 to 0o777)."""
        ...

    def list_mlsx(self, path: str) -> list[MlsxEntry]:
        """MLSD's view of a directory's entries, sorted; links are not followed."""
        ...

    def mlsx_entry(self, path: str, *, follow: bool = False) -> MlsxEntry:
        """MLST's view of ``path`` (a link is reported as a link unless ``follow``)."""
        ...

    def set_mtime(self, path: str, mtime: float) -> None:
        """Set the modification time (MFMT); the access time is kept."""
        ...

    def free_space(self, path: str) -> int:
        """Bytes an unprivileged process may still write on ``path``'s filesystem."""
        ...


def _reason(code: int | None) -> str:
    """The OS's wording for an errno, with a fallback for errors without one."""
    return os.strerror(code) if code else "Input/output error"


class _mapped:  # lower case: it reads like the function it replaced, ``with _mapped(path):``
    """Turn OS failures into FilesystemError naming only the virtual path.

    A class rather than a @contextmanager generator: every open, stat and
    listing goes through it, and this costs a fifth as much per use.
    """

    __slots__ = ("_virtual",)

    def __init__(self, virtual: str) -> None:
        self._virtual = virtual

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, _: type[BaseException] | None, error: BaseException | None, __: object
    ) -> None:
        if isinstance(error, OSError):
            raise FilesystemError(f"{self._virtual}: {_reason(error.errno)}") from error
        if isinstance(error, ValueError):  # the jail refuses bad names first; a backstop
            raise FilesystemError(
                f"{self._virtual}: invalid file name; choose another name"
            ) from error


def _kind(mode: int) -> Literal["file", "dir", "link", "other"]:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def _name_of(virtual: str) -> str:
    """The last component of a virtual path; the home itself is called "/"."""
    return posixpath.basename(virtual) or "/"


def _refuse_home(virtual: str, action: str) -> None:
    """Removing or renaming the home would pull the floor from under the session."""
    if virtual == "/":
        raise FilesystemError(f"/: Permission denied (cannot {action} your home directory)")


def _check_regular(virtual: str, mode: int) -> None:
    """Transfers only make sense for regular files; FIFOs would hang the server."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise FilesystemError(f"{virtual}: {os.strerror(errno.EISDIR)}")
    raise FilesystemError(
        f"{virtual}: not a regular file (devices, FIFOs and sockets cannot be transferred)"
    )


class LocalFilesystem:
    """``Filesystem`` on the local disk, confined to one home directory."""

    def __init__(self, home: Path) -> None:
        self._jail = Jail(home)

    # -- facts -------------------------------------------------------------

    def _facts(self, name: str, info: os.stat_result, real: str) -> FileFacts:
        kind = _kind(info.st_mode)
        return FileFacts(
            name=name,
            kind=kind,
            size=info.st_size,
            mtime=info.st_mtime,
            mode=info.st_mode,
            nlink=info.st_nlink,
            # Ids are hidden (like vsftpd's hide_ids): they mean nothing to the
            # client, and resolving names would cost a user-database lookup per entry.
            link_target=self._link_target(real) if kind == "link" else None,
        )

    def _link_target(self, real: str) -> str | None:
        """What a listing shows after "->", without revealing real paths.

        Relative targets are shown as written. Absolute ones are shown as
        virtual paths when they lie inside the home, and hidden otherwise.
        """
        try:
            target = os.readlink(real)
        except OSError:
            return None
        if not os.path.isabs(target):
            return target
        return self._jail.virtual_path(target)

    def stat(self, path: str) -> FileFacts:
        real = self._jail.real_path(path)
        with _mapped(path):
            info = os.stat(real)
        return self._facts(_name_of(path), info, real)

    def lstat(self, path: str) -> FileFacts:
        real = self._jail.real_path(path, follow_final=False)
        with _mapped(path):
            info = os.lstat(real)
        return self._facts(_name_of(path), info, real)

    def list_dir(self, path: str) -> list[FileFacts]:
        real = self._jail.real_path(path)
        # A NamedTuple's own constructor is a Python-level call, about as dear as the
        # rest of the loop; tuple.__new__ makes the same FileFacts without it.
        make = tuple.__new__
        with _mapped(path):
            return [
                make(
                    FileFacts,
                    (
                        name,
                        kind,
                        info.st_size,
                        info.st_mtime,
                        info.st_mode,
                        info.st_nlink,
                        "ftp",
                        "ftp",
                        target,
                    ),
                )
                for name, info, kind, target in scan_directory(real, self._link_target)
            ]

    def list_lines(self, path: str, now: float) -> list[str]:
        real = self._jail.real_path(path)
        # Each entry's lstat goes straight into its line: a big directory's LIST
        # costs a tenth less than making FileFacts first (see ListLineMaker).
        line = ListLineMaker(now).line
        with _mapped(path):
            return [
                line(name, kind, info.st_size, info.st_mtime, info.st_mode, info.st_nlink, target)
                for name, info, kind, target in scan_directory(real, self._link_target)
            ]

    def list_names(self, path: str) -> list[str]:
        real = self._jail.real_path(path)
        with _mapped(path), os.scandir(real) as scan:
            names = [entry.name for entry in scan if not entry.name.startswith(UPLOAD_TEMP_PREFIX)]
        names.sort()
        return names

    def _mode_or_none(self, path: str) -> int | None:
        try:
            real = self._jail.real_path(path)
            return os.stat(real).st_mode
        except (FilesystemError, OSError, ValueError):
            return None

    def is_dir(self, path: str) -> bool:
        mode = self._mode_or_none(path)
        return mode is not None and stat.S_ISDIR(mode)

    def is_file(self, path: str) -> bool:
        mode = self._mode_or_none(path)
        return mode is not None and stat.S_ISREG(mode)

    # -- transfers ---------------------------------------------------------

    def _open_regular(self, path: str, real: str, flags: int) -> int:
        """A blocking descriptor for a regular file, or FilesystemError.

        The type is checked on the opened descriptor, so a file swapped for
        a FIFO between a check and the open is still caught.
        """
        with _mapped(path):
            fd = os.open(real, flags | _OPEN_FLAGS, _NEW_FILE_MODE)
        try:
            with _mapped(path):
                _check_regular(path, os.fstat(fd).st_mode)
                os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_read(self, path: str) -> BinaryIO:
        real = self._jail.real_path(path)
        fd = self._open_regular(path, real, os.O_RDONLY)
        return os.fdopen(fd, "rb", buffering=0)

    def open_write(self, path: str, *, offset: int = 0, append: bool = False) -> BinaryIO:
        real = self._jail.real_path(path)
        if offset < 0:
            raise FilesystemError(f"{path}: restart offset {offset} is negative; use 0 or more")
        # Check before opening so a refused upload leaves no file behind and
        # a FIFO is never opened for writing at all.
        with _mapped(path):
            try:
                existing = os.stat(real)
            except FileNotFoundError:
                existing = None
        if existing is not None:
            _check_regular(path, existing.st_mode)
        if not append:
            self._check_offset(path, offset, existing.st_size if existing else 0)

        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else 0)
        fd = self._open_regular(path, real, flags)
        try:
            with _mapped(path):
                if append:
                    os.lseek(fd, 0, os.SEEK_END)
                else:
                    # Checked again on the descriptor: the file may have shrunk.
                    self._check_offset(path, offset, os.fstat(fd).st_size)
                    os.ftruncate(fd, offset)
                    os.lseek(fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "ab" if append else "wb", buffering=0)

    @staticmethod
    def _check_offset(path: str, offset: int, size: int) -> None:
        if offset > size:
            raise FilesystemError(
                f"{path}: restart offset {offset} is beyond the end of the file (size {size}); "
                f"restart at {size} or less"
            )

    def create_unique(self, directory: str, stem: str) -> tuple[str, BinaryIO]:
        if not stem or "/" in stem or stem in (".", ".."):
            raise FilesystemError(f"{stem!r}: not a usable file name; use a plain name without '/'")
        real_dir = self._jail.real_path(directory)
        for attempt in range(_MAX_UNIQUE_ATTEMPTS):
            name = stem if attempt == 0 else f"{stem}.{attempt}"
            virtual = posixpath.join(directory, name)
            # The jail also vets the stem itself (NUL bytes and the like).
            real = self._jail.real_path(virtual, follow_final=False)
            if os.path.dirname(real) != real_dir:
                raise FilesystemError(f"{virtual}: not a usable file name; choose another name")
            try:
                # O_EXCL is the atomic "only if nobody has this name" test; it
                # also refuses an existing symlink rather than following it.
                fd = self._open_regular(virtual, real, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FilesystemError as error:
                if isinstance(error.__cause__, FileExistsError):
                    continue
                raise
            return virtual, os.fdopen(fd, "wb", buffering=0)
        raise FilesystemError(
            f"{posixpath.join(directory, stem)}: no free name after {_MAX_UNIQUE_ATTEMPTS} "
            "attempts; remove old uploads or choose another name"
        )

    def open_atomic_write(self, path: str, *, placeholder: bool = False) -> AtomicFile:
        real = self._jail.real_path(path)
        with _mapped(path):
            try:
                existing: os.stat_result | None = os.stat(real)
            except FileNotFoundError:
                existing = None
        if existing is not None:
            _check_regular(path, existing.st_mode)
        directory, name = os.path.split(real)
        for _ in range(_MAX_TEMPORARY_ATTEMPTS):
            temp = os.path.join(directory, temporary_name(name))
            try:
                fd = self._open_regular(path, temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FilesystemError as error:
                if isinstance(error.__cause__, FileExistsError):
                    continue
                raise
            break
        else:
            raise FilesystemError(f"{path}: no free temporary name for the upload; try again")
        try:
            if existing is not None and not placeholder:
                with _mapped(path):
                    adopt_attributes(fd, existing)
        except BaseException:
            os.close(fd)
            os.unlink(temp)
            raise
        return AtomicFile(
            os.fdopen(fd, "wb", buffering=0),
            temp,
            real,
            placeholder=existing if placeholder else None,
        )

    # -- changes -----------------------------------------------------------

    def mkdir(self, path: str) -> None:
        real = self._jail.real_path(path, follow_final=False)
        with _mapped(path):
            os.mkdir(real, _NEW_DIR_MODE)

    def rmdir(self, path: str) -> None:
        _refuse_home(path, "remove")
        real = self._jail.real_path(path, follow_final=False)
        with _mapped(path):
            os.rmdir(real)

    def remove(self, path: str) -> None:
        _refuse_home(path, "remove")
        real = self._jail.real_path(path, follow_final=False)
        with _mapped(path):
            if stat.S_ISDIR(os.lstat(real).st_mode):
                raise FilesystemError(
                    f"{path}: {os.strerror(errno.EISDIR)}; remove directories with RMD"
                )
            os.unlink(real)

    def rename(self, source: str, target: str) -> None:
        _refuse_home(source, "rename")
        _refuse_home(target, "replace")
        real_source = self._jail.real_path(source, follow_final=False)
        real_target = self._jail.real_path(target, follow_final=False)
        # The OS does not say which side failed, so both paths are named.
        with _mapped(f"{source} -> {target}"):
            os.rename(real_source, real_target)

    def chmod(self, path: str, mode: int) -> None:
        if not 0 <= mode <= 0o777:
            # setuid/setgid/sticky bits are refused: clients have no business
            # creating setuid files on the server.
            raise FilesystemError(
                f"{path}: mode {mode:o} is not allowed; use permission bits 000 to 777"
            )
        real = self._jail.real_path(path)
        with _mapped(path):
            os.chmod(real, mode)

    # -- extensions (MLSD/MLST, MFMT, AVBL) ----------------------------------

    def list_mlsx(self, path: str) -> list[MlsxEntry]:
        real = self._jail.real_path(path)
        with _mapped(path):
            return scan_mlsx(real, self._link_target)

    def mlsx_entry(self, path: str, *, follow: bool = False) -> MlsxEntry:
        real = self._jail.real_path(path, follow_final=follow)
        with _mapped(path):
            info = os.stat(real) if follow else os.lstat(real)
        target = self._link_target(real) if stat.S_ISLNK(info.st_mode) else None
        return mlsx_entry(_name_of(path), info, target)

    def set_mtime(self, path: str, mtime: float) -> None:
        real = self._jail.real_path(path)
        with _mapped(path):
            # Seconds as a float: nanoseconds of year 9999 would overflow the C type.
            os.utime(real, (os.stat(real).st_atime, mtime))

    def free_space(self, path: str) -> int:
        real = self._jail.real_path(path)
        with _mapped(path):
            info = os.statvfs(real)
        return info.f_bavail * info.f_frsize
