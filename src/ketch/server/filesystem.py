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
import weakref
from pathlib import Path
from typing import BinaryIO, Literal

from ketch.protocol.listing import FileFacts
from ketch.protocol.mlsx import MlsxEntry
from ketch.server.atomic_file import AtomicFile, adopt_attributes, temporary_name
from ketch.server.filesystem_api import Filesystem, OpenDirectory
from ketch.server.jail import FilesystemError, Jail, PathEscapeError, Place
from ketch.server.mlsx_scan import (
    LinkTarget,
    directory_names,
    list_lines_of,
    mlsx_entries_of,
    mlsx_entry,
    open_listed,
    scan_directory,
    shown_link_target,
)
from ketch.server.os_errors import error_text, listing_error_text

__all__ = [
    "Filesystem",
    "FilesystemError",
    "LocalFilesystem",
    "PathEscapeError",
    "RestartOffsetError",
    "shared_filesystem",
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
# Any file held only to ask about its filesystem (O_PATH needs no permission on it).
_PLACE_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_CLOEXEC | os.O_NOFOLLOW


class RestartOffsetError(FilesystemError):
    """The restart offset (REST) lies beyond the end of the file, which is ``size`` bytes."""

    def __init__(self, virtual: str, offset: int, size: int) -> None:
        super().__init__(
            f"{virtual}: restart offset {offset} is beyond the end of the file (size {size}); "
            f"restart at {size} or less"
        )
        self.size = size


class _mapped:  # lower case: it reads like the function it replaced, ``with _mapped(path):``
    """Turn OS failures into FilesystemError naming only the virtual path.

    A class rather than a @contextmanager generator: every open, stat and
    listing goes through it, and this costs a fifth as much per use.
    """

    __slots__ = ("_virtual",)
    _text = staticmethod(error_text)

    def __init__(self, virtual: str) -> None:
        self._virtual = virtual

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, _: type[BaseException] | None, error: BaseException | None, __: object
    ) -> None:
        if isinstance(error, OSError):
            virtual, code = self._virtual, error.errno
            raise FilesystemError(
                f"{virtual}: {self._text(code)}", code or errno.EIO, virtual
            ) from error
        if isinstance(error, ValueError):  # the jail refuses bad names first; a backstop
            raise FilesystemError(
                f"{self._virtual}: invalid file name; choose another name"
            ) from error


class _mapped_listing(_mapped):
    """``_mapped`` for listings, whose refusals say what the directory lacks."""

    __slots__ = ()
    _text = staticmethod(listing_error_text)


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


def _replaced_file_size(source: Place, target: Place) -> int | None:
    """The size of the regular file a rename of ``source`` onto ``target`` replaces.

    Compared by inode, not by path: two names of one file (a hard link, or a path
    through a symlinked directory) rename to nothing and free nothing (POSIX).
    """
    try:
        there = target.stat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(there.st_mode):
        return None
    here = source.stat()
    if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
        return None
    return there.st_size


def _refuse_home(virtual: str, action: str) -> None:
    """Removing or renaming the home would pull the floor from under the session."""
    if virtual == "/":
        raise FilesystemError(f"/: Permission denied (cannot {action} your home directory)")


def _check_regular(virtual: str, mode: int) -> None:
    """Transfers only make sense for regular files; FIFOs would hang the server."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise FilesystemError(f"{virtual}: {error_text(errno.EISDIR)}")
    raise FilesystemError(
        f"{virtual}: not a regular file (devices, FIFOs and sockets cannot be transferred)"
    )


#: One LocalFilesystem per home, shared by the sessions logged in there (it keeps
#: no per-session state: keep it so). Made once, it spares every login resolving
#: the home again (a realpath: ~25 us) and every session a copy (~0.3 KiB).
_shared: weakref.WeakValueDictionary[Path, LocalFilesystem] = weakref.WeakValueDictionary()


def shared_filesystem(home: Path) -> LocalFilesystem:
    """The filesystem of ``home``; NotADirectoryError (from LocalFilesystem) if it is gone."""
    filesystem = _shared.get(home)
    if filesystem is None or not os.path.isdir(home):
        # No session there yet, or the home vanished: LocalFilesystem checks and says.
        filesystem = _shared[home] = LocalFilesystem(home)
    return filesystem


class LocalFilesystem:
    """``Filesystem`` on the local disk, confined to one home directory."""

    def __init__(self, home: Path) -> None:
        self._jail = Jail(home)
        self._home = self._jail.home_text

    # -- facts -------------------------------------------------------------

    def _facts(self, name: str, info: os.stat_result, place: Place) -> FileFacts:
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
            link_target=self._link_target(place) if kind == "link" else None,
        )

    def _link_target(self, place: Place) -> str | None:
        """What a listing shows after "->" for the link at ``place`` (see shown_link_target)."""
        return shown_link_target(place.name, place.dir_fd, self._home, os.path.dirname(place.real))

    def _link_targets_in(self, directory: Place) -> LinkTarget:
        """What a listing of ``directory`` shows after "->" for each of its links."""
        home, real = self._home, directory.real
        return lambda name, dir_fd: shown_link_target(name, dir_fd, home, real)

    def stat(self, path: str) -> FileFacts:
        return self._stat(path, follow=True)

    def lstat(self, path: str) -> FileFacts:
        return self._stat(path, follow=False)

    def _stat(self, path: str, *, follow: bool) -> FileFacts:
        with self._jail.place(path, follow_final=follow) as place, _mapped(path):
            info = _followed_stat(path, place) if follow else place.stat()
            return self._facts(_name_of(path), info, place)

    def enter(self, path: str) -> None:
        with self._jail.place(path) as place, _mapped(path):
            if not stat.S_ISDIR(_followed_stat(path, place).st_mode):
                raise FilesystemError(f"{path}: not a directory; RETR downloads a file.")
            # What chdir would check: without search (x) permission nothing in it can be
            # reached, and its listings could not look at a single entry.
            if not os.access(place.name, os.X_OK, dir_fd=place.dir_fd, follow_symlinks=False):
                raise FilesystemError(
                    f"{path}: Permission denied; the server may not search this directory "
                    "(entering it needs x permission on it); ask its admin",
                    errno.EACCES,
                    path,
                )

    def list_dir(self, path: str) -> list[FileFacts]:
        # A NamedTuple's own constructor is a Python-level call, about as dear as the
        # rest of the loop; tuple.__new__ makes the same FileFacts without it.
        make = tuple.__new__
        with self._jail.place(path) as place, _mapped_listing(path):
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
                for name, info, kind, target in scan_directory(place, self._link_targets_in(place))
            ]

    def list_lines(self, path: str, now: float) -> list[str]:
        with self._jail.place(path) as place, _mapped_listing(path):
            return list_lines_of(scan_directory(place, self._link_targets_in(place)), now)

    def open_directory(self, path: str) -> OpenDirectory | None:
        with self._jail.place(path) as place, _mapped_listing(path):
            return OpenDirectory(open_listed(place), self._home)

    def list_names(self, path: str) -> list[str]:
        with self._jail.place(path) as place, _mapped(path):  # names alone need no x
            fd = open_listed(place)
            try:
                return directory_names(fd)
            finally:
                os.close(fd)

    def _mode_or_none(self, path: str) -> int | None:
        try:
            with self._jail.place(path) as place, _mapped(path):
                return _followed_stat(path, place).st_mode
        except FilesystemError:
            return None

    def is_dir(self, path: str) -> bool:
        mode = self._mode_or_none(path)
        return mode is not None and stat.S_ISDIR(mode)

    def is_file(self, path: str) -> bool:
        mode = self._mode_or_none(path)
        return mode is not None and stat.S_ISREG(mode)

    # -- transfers ---------------------------------------------------------

    def _open_regular(self, path: str, place: Place, flags: int, name: str | None = None) -> int:
        """A blocking descriptor for the regular file ``name`` (default: the place's), or
        FilesystemError.

        The type is checked on the opened descriptor, so a file swapped for
        a FIFO between a check and the open is still caught.
        """
        with _mapped(path):
            fd = os.open(
                name or place.name, flags | _OPEN_FLAGS, _NEW_FILE_MODE, dir_fd=place.dir_fd
            )
        try:
            with _mapped(path):
                _check_regular(path, os.fstat(fd).st_mode)
                os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_read(self, path: str) -> BinaryIO:
        with self._jail.place(path) as place:
            fd = self._open_regular(path, place, os.O_RDONLY)
        return os.fdopen(fd, "rb", buffering=0)

    def open_write(
        self, path: str, *, offset: int = 0, append: bool = False, truncate: bool = True
    ) -> BinaryIO:
        if offset < 0:
            raise FilesystemError(f"{path}: restart offset {offset} is negative; use 0 or more")
        with self._jail.place(path) as place:
            # Check before opening so a refused upload leaves no file behind and
            # a FIFO is never opened for writing at all.
            existing = _existing_regular(path, place)
            if not append:
                self._check_offset(path, offset, existing.st_size if existing else 0)
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else 0)
            fd = self._open_regular(path, place, flags)
        try:
            with _mapped(path):
                if append:
                    os.lseek(fd, 0, os.SEEK_END)
                else:
                    # Checked again on the descriptor: the file may have shrunk.
                    self._check_offset(path, offset, os.fstat(fd).st_size)
                    if truncate:
                        os.ftruncate(fd, offset)
                    os.lseek(fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "ab" if append else "wb", buffering=0)

    @staticmethod
    def _check_offset(path: str, offset: int, size: int) -> None:
        if offset > size:
            raise RestartOffsetError(path, offset, size)

    def create_unique(self, directory: str, stem: str) -> tuple[str, BinaryIO]:
        if not stem or "/" in stem or stem in (".", ".."):
            raise FilesystemError(f"{stem!r}: not a usable file name; use a plain name without '/'")
        with self._jail.place(posixpath.join(directory, stem), follow_final=False) as place:
            for attempt in range(_MAX_UNIQUE_ATTEMPTS):
                name = stem if attempt == 0 else f"{stem}.{attempt}"
                virtual = posixpath.join(directory, name)
                # The jail also vets the name itself (NUL bytes and the like).
                real = self._jail.real_path(virtual, follow_final=False)
                if os.path.dirname(real) != os.path.dirname(place.real):
                    raise FilesystemError(f"{virtual}: not a usable file name; choose another name")
                try:
                    # O_EXCL is the atomic "only if nobody has this name" test; it
                    # also refuses an existing symlink rather than following it.
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
                    fd = self._open_regular(virtual, place, flags, name)
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
        place = self._jail.place(path)  # held by the AtomicFile until it is done
        try:
            return self._atomic_write_at(path, place, placeholder=placeholder)
        except BaseException:
            place.close()
            raise

    def _atomic_write_at(self, path: str, place: Place, *, placeholder: bool) -> AtomicFile:
        existing = _existing_regular(path, place)
        if existing is not None and not placeholder:
            _check_may_replace(path, place)
        for _ in range(_MAX_TEMPORARY_ATTEMPTS):
            temp = temporary_name(place.name)
            try:
                fd = self._open_regular(path, place, os.O_WRONLY | os.O_CREAT | os.O_EXCL, temp)
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
            os.unlink(temp, dir_fd=place.dir_fd)
            raise
        return AtomicFile(
            os.fdopen(fd, "wb", buffering=0),
            place,
            temp,
            placeholder=existing if placeholder else None,
        )

    # -- changes -----------------------------------------------------------

    def mkdir(self, path: str) -> None:
        with self._jail.place(path, follow_final=False) as place, _mapped(path):
            os.mkdir(place.name, _NEW_DIR_MODE, dir_fd=place.dir_fd)

    def rmdir(self, path: str) -> None:
        _refuse_home(path, "remove")
        with self._jail.place(path, follow_final=False) as place, _mapped(path):
            os.rmdir(place.name, dir_fd=place.dir_fd)

    def remove(self, path: str) -> None:
        _refuse_home(path, "remove")
        with self._jail.place(path, follow_final=False) as place, _mapped(path):
            info = place.stat()
            if stat.S_ISDIR(info.st_mode):
                raise FilesystemError(
                    f"{path}: {os.strerror(errno.EISDIR)}; remove directories with RMD"
                )
            os.unlink(place.name, dir_fd=place.dir_fd)

    def rename(self, source: str, target: str) -> int | None:
        _refuse_home(source, "rename")
        _refuse_home(target, "replace")
        with (
            self._jail.place(source, follow_final=False) as old,
            self._jail.place(target, follow_final=False) as new,
            # The OS does not say which side failed, so both paths are named.
            _mapped(f"{source} -> {target}"),
        ):
            replaced = _replaced_file_size(old, new)
            os.rename(old.name, new.name, src_dir_fd=old.dir_fd, dst_dir_fd=new.dir_fd)
        return replaced

    def chmod(self, path: str, mode: int) -> None:
        if not 0 <= mode <= 0o777:
            # setuid/setgid/sticky bits are refused: clients have no business
            # creating setuid files on the server.
            raise FilesystemError(
                f"{path}: mode {mode:o} is not allowed; use permission bits 000 to 777"
            )
        with self._jail.place(path) as place, _mapped(path):
            _followed_stat(path, place)  # a loop, or a link swapped in: ELOOP
            try:
                os.chmod(place.name, mode, dir_fd=place.dir_fd, follow_symlinks=False)
            except ValueError:
                # glibc refuses for a link (swapped in just now), and for any file when it
                # has no /proc to do this through; then the jail could not check the place
                # either (see Jail.place), and only a link is still refused.
                _followed_stat(path, place)
                os.chmod(place.name, mode, dir_fd=place.dir_fd)

    # -- extensions (MLSD/MLST, MFMT, AVBL) ----------------------------------

    def list_mlsx(self, path: str) -> list[MlsxEntry]:
        with self._jail.place(path) as place, _mapped_listing(path):
            return mlsx_entries_of(scan_directory(place, self._link_targets_in(place)))

    def mlsx_entry(self, path: str, *, follow: bool = False) -> MlsxEntry:
        with self._jail.place(path, follow_final=follow) as place, _mapped(path):
            info = _followed_stat(path, place) if follow else place.stat()
            link = stat.S_ISLNK(info.st_mode)
            return mlsx_entry(_name_of(path), info, self._link_target(place) if link else None)

    def set_mtime(self, path: str, mtime: float) -> None:
        with self._jail.place(path) as place, _mapped(path):
            atime = _followed_stat(path, place).st_atime
            # Seconds as a float: nanoseconds of year 9999 would overflow the C type.
            os.utime(place.name, (atime, mtime), dir_fd=place.dir_fd, follow_symlinks=False)

    def free_space(self, path: str) -> int:
        with self._jail.place(path) as place, _mapped(path):
            fd = os.open(place.name, _PLACE_FLAGS, dir_fd=place.dir_fd)
            try:
                info = os.fstatvfs(fd)
            finally:
                os.close(fd)
        return info.f_bavail * info.f_frsize


def _followed_stat(path: str, place: Place) -> os.stat_result:
    """The facts of what ``path`` leads to, for a place checked with ``follow_final``.

    The jail resolved every symlink on the way, so a link at the place is a
    loop it could not resolve, or one swapped in since: either way it is not
    followed, and ELOOP says why.
    """
    info = place.stat()
    if stat.S_ISLNK(info.st_mode):
        raise FilesystemError(f"{path}: {error_text(errno.ELOOP)}", errno.ELOOP, path)
    return info


def _check_may_replace(path: str, place: Place) -> None:
    """Refuse to replace a file the server's user may not write, as writing in place would.

    The rename that ends an atomic upload needs write access to the directory
    only: without this a user could replace a read-only file, or another
    owner's, that APPE and REST+STOR (and every server writing in place) refuse.
    """
    if not os.access(place.name, os.W_OK, dir_fd=place.dir_fd, follow_symlinks=False):
        raise FilesystemError(f"{path}: {error_text(errno.EACCES)}", errno.EACCES, path)


def _existing_regular(path: str, place: Place) -> os.stat_result | None:
    """The facts of the file an upload would replace (None if there is none); anything
    but a regular file there (a directory, a FIFO, a symlink swapped in) is refused."""
    with _mapped(path):
        try:
            existing = place.stat()
        except FileNotFoundError:
            return None
    _check_regular(path, existing.st_mode)
    return existing
