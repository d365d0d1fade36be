"""The jail against a directory swapped for a symlink between its check and the use.

A local user who can write inside a home could replace a directory on a
path with a symlink to somewhere else at just the wrong moment: after the
jail has checked the path, before the filesystem call that uses it. These
tests make that moment certain: the jail's check is wrapped so that
``/sub`` becomes a symlink to a directory outside the home right after each
check of a path under it. Every operation must then refuse, and nothing
outside may be read, listed, created, changed or removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ketch.server.filesystem import FilesystemError, LocalFilesystem
from ketch.server.jail import Place
from ketch.server.mlsx_scan import directory_names

SECRET = b"outside the home\n" * 1000  # 17000 bytes: a size no file inside has


class Swapper:
    """Swaps ``home/sub`` for a symlink to ``outside`` once a path under it is checked."""

    def __init__(self, home: Path, outside: Path) -> None:
        self.home = home
        self.outside = outside
        self.swaps = 0

    def after_check(self, virtual: str) -> None:
        sub = self.home / "sub"
        if (virtual == "/sub" or virtual.startswith("/sub/")) and not sub.is_symlink():
            sub.rename(self.home / "sub.moved")
            sub.symlink_to(self.outside)
            self.swaps += 1


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    place = tmp_path / "outside"
    place.mkdir()
    (place / "file.txt").write_bytes(SECRET)
    (place / "other.txt").write_bytes(SECRET)
    (place / "dir").mkdir()
    (place / "outside-only.txt").write_bytes(b"a name no listing inside has")
    os.utime(place / "file.txt", (1_000_000, 1_000_000))
    (place / "file.txt").chmod(0o600)
    return place


@pytest.fixture
def racing(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[LocalFilesystem, Swapper]:
    home = tmp_path / "home"
    (home / "sub" / "dir").mkdir(parents=True)
    (home / "sub" / "file.txt").write_bytes(b"inside")
    (home / "sub" / "other.txt").write_bytes(b"inside")
    fs = LocalFilesystem(home)
    swapper = Swapper(home, outside)
    jail = fs._jail  # the race is injected right after the jail's own check
    checked = jail.real_path

    def check_then_swap(virtual: str, *, follow_final: bool = True) -> str:
        real = checked(virtual, follow_final=follow_final)
        swapper.after_check(virtual)
        return real

    monkeypatch.setattr(jail, "real_path", check_then_swap)
    return fs, swapper


def outside_state(outside: Path) -> dict[str, Any]:
    """Everything a refused operation must have left as it was."""
    file = outside / "file.txt"
    return {
        "names": sorted(os.listdir(outside)),
        "content": file.read_bytes(),
        "mode": file.stat().st_mode,
        "mtime": file.stat().st_mtime,
        "other": (outside / "other.txt").read_bytes(),
        "dir": sorted(os.listdir(outside / "dir")),
    }


def read(fs: LocalFilesystem) -> Any:
    with fs.open_read("/sub/file.txt") as file:
        return file.read()


def write(fs: LocalFilesystem) -> Any:
    with fs.open_write("/sub/new.txt") as file:
        return file.write(b"planted")


def write_over(fs: LocalFilesystem) -> Any:
    with fs.open_write("/sub/file.txt") as file:
        return file.write(b"planted")


def atomic_write(fs: LocalFilesystem) -> Any:
    upload = fs.open_atomic_write("/sub/file.txt")
    upload.file.write(b"planted")
    try:
        return upload.commit()
    finally:
        upload.discard()


def names_of_opened(fs: LocalFilesystem) -> list[str]:
    """What a listing worker reads through the descriptor open_directory hands out."""
    directory = fs.open_directory("/sub")
    assert directory is not None
    try:
        return directory_names(directory.fd)
    finally:
        os.close(directory.fd)


def unique(fs: LocalFilesystem) -> Any:
    _, file = fs.create_unique("/sub", "file.txt")
    with file:
        return file.write(b"planted")


OPERATIONS: dict[str, Callable[[LocalFilesystem], Any]] = {
    "open_read": read,
    "open_write (new)": write,
    "open_write (existing)": write_over,
    "open_atomic_write": atomic_write,
    "create_unique": unique,
    "stat": lambda fs: fs.stat("/sub/file.txt"),
    "lstat": lambda fs: fs.lstat("/sub/file.txt"),
    "enter": lambda fs: fs.enter("/sub/dir"),
    "mlsx_entry": lambda fs: fs.mlsx_entry("/sub/file.txt"),
    "list_dir": lambda fs: fs.list_dir("/sub"),
    "list_lines": lambda fs: fs.list_lines("/sub", 0.0),
    "list_names": lambda fs: fs.list_names("/sub"),
    "list_mlsx": lambda fs: fs.list_mlsx("/sub"),
    "open_directory": names_of_opened,
    "list_dir (below)": lambda fs: fs.list_dir("/sub/dir"),
    "mkdir": lambda fs: fs.mkdir("/sub/planted"),
    "rmdir": lambda fs: fs.rmdir("/sub/dir"),
    "remove": lambda fs: fs.remove("/sub/file.txt"),
    "rename (from)": lambda fs: fs.rename("/sub/file.txt", "/taken.txt"),
    "rename (onto)": lambda fs: fs.rename("/sub/other.txt", "/sub/file.txt"),
    "chmod": lambda fs: fs.chmod("/sub/file.txt", 0o666),
    "set_mtime": lambda fs: fs.set_mtime("/sub/file.txt", 2_000_000.0),
}


@pytest.mark.parametrize("operation", OPERATIONS, ids=list(OPERATIONS))
def test_a_directory_swapped_for_a_symlink_after_the_check_is_refused(
    racing: tuple[LocalFilesystem, Swapper], outside: Path, operation: str
) -> None:
    fs, swapper = racing
    before = outside_state(outside)
    with pytest.raises(FilesystemError):
        OPERATIONS[operation](fs)
    assert swapper.swaps == 1, "the swap did not happen: the test proved nothing"
    assert outside_state(outside) == before
    assert not (outside.parent / "taken.txt").exists()


def test_without_a_swap_the_same_operations_work(tmp_path: Path, outside: Path) -> None:
    """The control: the checks above refuse because of the swap, not for another reason."""
    home = tmp_path / "home"
    (home / "sub" / "dir").mkdir(parents=True)
    (home / "sub" / "file.txt").write_bytes(b"inside")
    (home / "sub" / "other.txt").write_bytes(b"inside")
    fs = LocalFilesystem(home)
    assert read(fs) == b"inside"
    assert [entry.name for entry in fs.list_dir("/sub")] == ["dir", "file.txt", "other.txt"]
    assert fs.list_names("/sub") == ["dir", "file.txt", "other.txt"]
    assert names_of_opened(fs) == ["dir", "file.txt", "other.txt"]
    assert len(fs.list_mlsx("/sub")) == 3 and len(fs.list_lines("/sub", 0.0)) == 3
    assert fs.stat("/sub/file.txt").size == len(b"inside")
    fs.enter("/sub/dir")
    assert fs.mlsx_entry("/sub/file.txt").size == len(b"inside")
    write(fs)
    atomic_write(fs)
    assert (home / "sub" / "file.txt").read_bytes() == b"planted"
    unique(fs)
    fs.chmod("/sub/file.txt", 0o640)
    assert (home / "sub" / "file.txt").stat().st_mode & 0o777 == 0o640
    fs.set_mtime("/sub/file.txt", 2_000_000.0)
    assert (home / "sub" / "file.txt").stat().st_mtime == 2_000_000.0
    fs.mkdir("/sub/made")
    fs.rmdir("/sub/made")
    fs.rename("/sub/other.txt", "/sub/renamed.txt")
    fs.remove("/sub/renamed.txt")
    assert sorted(os.listdir(home / "sub")) == ["dir", "file.txt", "file.txt.1", "new.txt"]


def test_a_swap_after_the_place_is_held_changes_nothing_outside(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap just after ``Jail.place`` has checked its directory: the operations act on
    the directory held (now ``sub.moved``) or refuse, and never reach outside."""
    for operation in OPERATIONS.values():
        home = tmp_path / f"home{len(list(tmp_path.iterdir()))}"
        (home / "sub" / "dir").mkdir(parents=True)
        (home / "sub" / "file.txt").write_bytes(b"inside")
        (home / "sub" / "other.txt").write_bytes(b"inside")
        fs = LocalFilesystem(home)
        swapper = Swapper(home, outside)
        jail = fs._jail
        placed = jail.place

        def place_then_swap(
            virtual: str, *, follow_final: bool = True, _placed: Any = placed, _s: Any = swapper
        ) -> Place:
            place = _placed(virtual, follow_final=follow_final)
            _s.after_check(virtual)
            return place

        monkeypatch.setattr(jail, "place", place_then_swap)
        before = outside_state(outside)
        result: Any = None
        with contextlib.suppress(FilesystemError):
            result = operation(fs)
        assert swapper.swaps == 1
        assert outside_state(outside) == before
        # Nor is anything from outside read, listed or described.
        shown = repr(result)
        assert "outside the home" not in shown, "read from outside"
        assert "outside-only" not in shown and str(len(SECRET)) not in shown, shown


def test_a_symlink_loop_is_reported_as_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "loop").symlink_to("loop")
    (home / "file.txt").write_bytes(b"x")
    (home / "link").symlink_to("file.txt")
    fs = LocalFilesystem(home)
    for operation in (
        lambda: fs.stat("/loop"),
        lambda: fs.mlsx_entry("/loop", follow=True),
        lambda: fs.chmod("/loop", 0o600),
        lambda: fs.set_mtime("/loop", 2_000_000.0),
        lambda: fs.open_read("/loop"),
    ):
        with pytest.raises(FilesystemError, match=r"^/loop: Too many levels of symbolic links"):
            operation()
    assert not fs.is_dir("/loop") and not fs.is_file("/loop")
    assert fs.lstat("/loop").kind == "link"
    # A link inside the home still leads to its target.
    fs.chmod("/link", 0o604)
    assert (home / "file.txt").stat().st_mode & 0o777 == 0o604
    assert fs.is_file("/link") and fs.stat("/link").kind == "file"


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) to unmount /proc in a private mount namespace",
)
def test_without_proc_chmod_still_works_and_the_log_says_what_is_missing(
    tmp_path: Path,
) -> None:
    """With no /proc (some containers) glibc cannot chmod without following a link,
    and the jail cannot check its places: SITE CHMOD must still work, and the log
    must say once what is missing."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "f").write_bytes(b"x")
    script = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from ketch.server.filesystem import LocalFilesystem\n"
        "logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
        "fs = LocalFilesystem(Path(sys.argv[1]))\n"
        "fs.chmod('/f', 0o640)\n"
        "fs.chmod('/f', 0o604)\n"
        "print(fs.stat('/f').size)\n"
    )
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
    command += ['umount -l /proc && exec "$0" -c "$1" "$2"', sys.executable, script, str(home)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    assert (home / "f").stat().st_mode & 0o777 == 0o604
    assert result.stderr.count("/proc/self/fd is missing") == 1, result.stderr
