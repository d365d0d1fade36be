"""What a session may do with files: the ``Filesystem`` protocol.

Sessions see a ``Filesystem`` and never call ``os`` themselves; the one
implementation today is :class:`~ketch.server.filesystem.LocalFilesystem`
(the disk, behind the jail). All paths are virtual: absolute, normalized
POSIX strings relative to the user's home.
"""

from __future__ import annotations

from typing import BinaryIO, NamedTuple, Protocol

from ketch.protocol.listing import FileFacts
from ketch.protocol.mlsx import MlsxEntry
from ketch.server.atomic_file import AtomicFile

__all__ = ["Filesystem", "OpenDirectory"]


class OpenDirectory(NamedTuple):
    """A directory opened for a listing worker (see listing_workers); close ``fd`` after."""

    fd: int  # O_RDONLY | O_DIRECTORY, checked against the jail when opened
    home: str  # the real home, for showing link targets as virtual paths


class Filesystem(Protocol):
    """What a session may do with files; all paths are virtual."""

    def stat(self, path: str) -> FileFacts:
        """Facts about ``path``, following symlinks that stay inside the home."""
        ...

    def lstat(self, path: str) -> FileFacts:
        """Facts about ``path`` itself; a symlink is reported as a link."""
        ...

    def enter(self, path: str) -> None:
        """Check that ``path`` can be the working directory: a directory the server may
        search (as chdir checks); FilesystemError says why not."""
        ...

    def list_dir(self, path: str) -> list[FileFacts]:
        """The entries of a directory sorted by name; links are not followed."""
        ...

    def list_lines(self, path: str, now: float) -> list[str]:
        """LIST's ``ls -l`` lines for a directory's entries: ``list_dir``, formatted as read."""
        ...

    def open_directory(self, path: str) -> OpenDirectory | None:
        """The directory at ``path`` opened for reading its entries elsewhere, or None when
        this filesystem has no directory descriptors to hand out (it lists in-process)."""
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

    def open_write(
        self, path: str, *, offset: int = 0, append: bool = False, truncate: bool = True
    ) -> BinaryIO:
        """An unbuffered regular file opened for writing at ``offset`` or the end.

        Without ``truncate`` what lies past ``offset`` stays until the caller cuts it
        (an upload does once its data connection is there). An offset past the end
        raises RestartOffsetError, but only after the checks of the path itself, so
        that a path that cannot be written gets their error.
        """
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

    def rename(self, source: str, target: str) -> int | None:
        """Rename ``source`` to ``target``, replacing a file already there.

        Returns the size of the regular file the rename replaced, for the quota;
        None when it replaced none (another name for ``source`` itself is not
        replaced: renaming a file onto a hard link or a path through a symlink to
        it leaves both names, and frees nothing).
        """
        ...

    def chmod(self, path: str, mode: int) -> None:
        """Change permission bits (0o000 to 0o777)."""
        ...

    def list_mlsx(self, path: str) -> list[MlsxEntry]:
        """MLSD's view of a directory's entries, sorted; links are not followed."""
        ...

    def mlsx_entry(self, path: str, *, follow: bool = False) -> MlsxEntry:
        """MLST's view of ``path`` (a link is reported as a link unless ``follow``); the home
        is named "/", which is how its ``perm`` fact knows it cannot be removed or renamed."""
        ...

    def set_mtime(self, path: str, mtime: float) -> None:
        """Set the modification time (MFMT); the access time is kept."""
        ...

    def free_space(self, path: str) -> int:
        """Bytes an unprivileged process may still write on ``path``'s filesystem."""
        ...
