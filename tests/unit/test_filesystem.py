"""LocalFilesystem on real temporary directories: facts, transfers, changes, the jail."""

from __future__ import annotations

import io
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ketch.protocol.listing import format_list_line
from ketch.server.filesystem import (
    Filesystem,
    FilesystemError,
    LocalFilesystem,
    PathEscapeError,
)

# The reasons' full text (see ketch.server.os_errors), as regular expressions.
NOT_A_DIRECTORY = "Not a directory; a name on the path is a file; check the path"
NO_SUCH_FILE = r"No such file or directory; check the name \(LIST shows what is there\)"
FILE_EXISTS = "File exists; choose another name, or delete that one first"
NOT_EMPTY = "Directory not empty; delete what is in it first"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "docs").mkdir(parents=True)
    (home / "docs" / "a.txt").write_bytes(b"0123456789")
    (home / "b.bin").write_bytes(b"bb")
    return home


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    return outside


@pytest.fixture
def fs(home: Path) -> Filesystem:
    # Typed as the protocol: LocalFilesystem must satisfy it.
    return LocalFilesystem(home)


# -- facts -------------------------------------------------------------------------


def test_stat_reports_file_facts_with_hidden_ids(fs: Filesystem, home: Path) -> None:
    facts = fs.stat("/docs/a.txt")
    assert facts.name == "a.txt"
    assert facts.kind == "file"
    assert facts.size == 10
    assert facts.mtime == pytest.approx((home / "docs" / "a.txt").stat().st_mtime)
    assert stat.S_ISREG(facts.mode)
    assert (facts.owner, facts.group) == ("ftp", "ftp")


def test_stat_of_root_is_a_directory_named_slash(fs: Filesystem) -> None:
    facts = fs.stat("/")
    assert (facts.name, facts.kind) == ("/", "dir")


def test_missing_file_error_names_virtual_path_and_reason(fs: Filesystem, tmp_path: Path) -> None:
    with pytest.raises(FilesystemError) as caught:
        fs.stat("/nope.txt")
    assert str(caught.value) == (
        "/nope.txt: No such file or directory; check the name (LIST shows what is there)"
    )


def test_list_dir_is_sorted_and_complete(fs: Filesystem, home: Path) -> None:
    (home / "c").mkdir()
    (home / "A").write_text("")
    names = [facts.name for facts in fs.list_dir("/")]
    assert names == ["A", "b.bin", "c", "docs"]
    kinds = {facts.name: facts.kind for facts in fs.list_dir("/")}
    assert kinds == {"A": "file", "b.bin": "file", "c": "dir", "docs": "dir"}


def test_list_dir_of_a_file_is_an_error(fs: Filesystem) -> None:
    with pytest.raises(FilesystemError, match=rf"^/b.bin: {NOT_A_DIRECTORY}$"):
        fs.list_dir("/b.bin")
    with pytest.raises(FilesystemError, match=rf"^/b.bin: {NOT_A_DIRECTORY}$"):
        fs.list_names("/b.bin")


def test_list_names_are_list_dirs_names_without_stats(fs: Filesystem, home: Path) -> None:
    (home / "c").mkdir()
    (home / "A").write_text("")
    (home / "dangling").symlink_to("gone.txt")
    (home / ".ketch-upload-0123456789ab.A.part").write_text("in progress")
    assert fs.list_names("/") == ["A", "b.bin", "c", "dangling", "docs"]
    assert fs.list_names("/") == [facts.name for facts in fs.list_dir("/")]
    assert fs.list_names("/docs") == ["a.txt"]
    with pytest.raises(FilesystemError, match=rf"^/nope: {NO_SUCH_FILE}$"):
        fs.list_names("/nope")


def test_only_uploads_in_progress_are_left_out_of_listings(fs: Filesystem, home: Path) -> None:
    in_progress = [".ketch-upload-", ".ketch-upload-0123.a.part", ".ketch-upload-zz.part"]
    neighbours = [".ketch-upload", ".ketch-upload.", ".ketch-uploae", ".ketch-uploac-", ".k", "~"]
    for name in in_progress + neighbours:
        (home / name).write_text("")
    shown = sorted(["b.bin", "docs", *neighbours])
    assert fs.list_names("/") == shown
    assert [facts.name for facts in fs.list_dir("/")] == shown


def test_links_are_listed_as_links_with_targets(fs: Filesystem, home: Path, outside: Path) -> None:
    (home / "relative").symlink_to("docs/a.txt")
    (home / "absolute").symlink_to(home / "docs")
    (home / "escape").symlink_to(outside / "secret.txt")
    listed = {facts.name: facts for facts in fs.list_dir("/")}
    assert {listed[name].kind for name in ("relative", "absolute", "escape")} == {"link"}
    assert listed["relative"].link_target == "docs/a.txt"
    # Absolute targets are shown as virtual paths, or hidden when outside the home.
    assert listed["absolute"].link_target == "/docs"
    assert listed["escape"].link_target is None


def test_list_lines_are_the_lines_of_list_dir(fs: Filesystem, home: Path, outside: Path) -> None:
    """LIST's fast path (lstat straight into lines) shows exactly what list_dir's facts do."""
    (home / "c").mkdir()
    (home / "relative").symlink_to("docs/a.txt")
    (home / "absolute").symlink_to(home / "docs")
    (home / "escape").symlink_to(outside / "secret.txt")
    (home / "two\nlines").write_text("x")
    (home / ".ketch-upload-0123456789ab.A.part").write_text("in progress")
    os.utime(home / "b.bin", (0, 1_000_000_000))  # old: shown with its year
    now = time.time()
    lines = fs.list_lines("/", now)
    assert lines == [format_list_line(facts, now) for facts in fs.list_dir("/")]
    assert len(lines) == 7  # the upload in progress is not shown
    shown = "\n".join(lines)
    assert "relative -> docs/a.txt" in shown and "absolute -> /docs" in shown
    assert str(outside) not in shown and "two?lines" in shown and " 2001 b.bin" in shown
    with pytest.raises(FilesystemError, match=rf"^/b.bin: {NOT_A_DIRECTORY}$"):
        fs.list_lines("/b.bin", now)
    with pytest.raises(PathEscapeError):
        fs.list_lines("/escape", now)


def test_dangling_symlink_is_listed(fs: Filesystem, home: Path) -> None:
    (home / "dangling").symlink_to("gone.txt")
    listed = {facts.name: facts for facts in fs.list_dir("/")}
    assert listed["dangling"].kind == "link"
    assert listed["dangling"].link_target == "gone.txt"
    assert not fs.is_file("/dangling")


def test_lstat_reports_the_link_itself(fs: Filesystem, home: Path, outside: Path) -> None:
    (home / "escape").symlink_to(outside)
    facts = fs.lstat("/escape")
    assert (facts.name, facts.kind) == ("escape", "link")


def test_symlink_inside_jail_works(fs: Filesystem, home: Path) -> None:
    (home / "shortcut").symlink_to("docs")
    assert fs.is_dir("/shortcut")
    assert fs.stat("/shortcut").kind == "dir"
    assert [facts.name for facts in fs.list_dir("/shortcut")] == ["a.txt"]
    with fs.open_read("/shortcut/a.txt") as file:
        assert file.read() == b"0123456789"


@pytest.mark.parametrize(
    "operation",
    [
        lambda fs: fs.stat("/escape"),
        lambda fs: fs.list_dir("/escape"),
        lambda fs: fs.open_read("/escape/secret.txt"),
        lambda fs: fs.open_write("/escape/secret.txt"),
        lambda fs: fs.open_write("/escape/new.txt"),
        lambda fs: fs.mkdir("/escape/newdir"),
        lambda fs: fs.rename("/b.bin", "/escape/b.bin"),
        lambda fs: fs.create_unique("/escape", "up"),
        lambda fs: fs.chmod("/escape/secret.txt", 0o777),
    ],
    ids=["stat", "list", "read", "overwrite", "create", "mkdir", "rename", "stou", "chmod"],
)
def test_symlink_to_outside_cannot_be_followed(
    fs: Filesystem,
    home: Path,
    outside: Path,
    operation: Callable[[Filesystem], Any],
) -> None:
    (home / "escape").symlink_to(outside)
    before = sorted(os.listdir(outside))
    mode = (outside / "secret.txt").stat().st_mode
    with pytest.raises(PathEscapeError) as caught:
        operation(fs)
    assert str(outside) not in str(caught.value)
    assert sorted(os.listdir(outside)) == before
    assert (outside / "secret.txt").read_text() == "secret"
    assert (outside / "secret.txt").stat().st_mode == mode


def test_symlink_to_outside_cannot_be_opened(fs: Filesystem, home: Path, outside: Path) -> None:
    (home / "secret.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(PathEscapeError, match="outside your home directory"):
        fs.open_read("/secret.txt")


def test_cwd_into_outside_link_is_refused(fs: Filesystem, home: Path, outside: Path) -> None:
    (home / "escape").symlink_to(outside)
    assert fs.is_dir("/docs")
    assert not fs.is_dir("/escape")
    assert not fs.is_dir("/missing")
    assert not fs.is_file("/escape/secret.txt")


def test_link_to_outside_can_be_removed_without_touching_target(
    fs: Filesystem, home: Path, outside: Path
) -> None:
    (home / "escape").symlink_to(outside / "secret.txt")
    fs.remove("/escape")
    assert not (home / "escape").is_symlink()
    assert (outside / "secret.txt").read_text() == "secret"


def test_non_utf8_name_lists_and_opens(fs: Filesystem, home: Path) -> None:
    raw = os.fsencode(home) + b"/caf\xe9.txt"  # Latin-1 bytes: not valid UTF-8
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"latin")
    os.close(fd)
    name = "caf\udce9.txt"  # the surrogate escape for byte 0xE9
    assert name in [facts.name for facts in fs.list_dir("/")]
    assert fs.stat("/" + name).size == 5
    with fs.open_read("/" + name) as file:
        assert file.read() == b"latin"
    fs.rename("/" + name, "/" + name + ".old")
    assert os.path.exists(raw + b".old")


# -- reading and writing -------------------------------------------------------------


def test_open_read_is_unbuffered_real_file(fs: Filesystem) -> None:
    with fs.open_read("/docs/a.txt") as file:
        assert isinstance(file, io.FileIO)  # buffering=0: fileno() usable for sendfile
        assert os.fstat(file.fileno()).st_size == 10
        assert file.read() == b"0123456789"


def test_open_read_of_directory_is_refused(fs: Filesystem) -> None:
    with pytest.raises(FilesystemError, match=r"^/docs: Is a directory; name a file$"):
        fs.open_read("/docs")


@pytest.mark.timeout(10)
def test_fifo_is_refused_without_hanging(fs: Filesystem, home: Path) -> None:
    os.mkfifo(home / "pipe")
    with pytest.raises(FilesystemError, match="not a regular file"):
        fs.open_read("/pipe")
    with pytest.raises(FilesystemError, match="not a regular file"):
        fs.open_write("/pipe")
    with pytest.raises(FilesystemError, match="not a regular file"):
        fs.open_write("/pipe", append=True)
    assert fs.stat("/pipe").kind == "other"
    assert not fs.is_file("/pipe")


def test_open_write_creates_and_truncates(fs: Filesystem, home: Path) -> None:
    with fs.open_write("/new.txt") as file:
        assert isinstance(file, io.FileIO)
        file.write(b"hello")
    assert (home / "new.txt").read_bytes() == b"hello"
    with fs.open_write("/docs/a.txt") as file:
        file.write(b"xy")
    assert (home / "docs" / "a.txt").read_bytes() == b"xy"


def test_rest_offset_truncates_and_positions(fs: Filesystem, home: Path) -> None:
    with fs.open_write("/docs/a.txt", offset=4) as file:
        assert file.tell() == 4
        file.write(b"XY")
    assert (home / "docs" / "a.txt").read_bytes() == b"0123XY"


def test_without_truncate_the_file_stays_whole_until_the_caller_cuts_it(
    fs: Filesystem, home: Path
) -> None:
    for offset in (0, 4):
        with fs.open_write("/docs/a.txt", offset=offset, truncate=False) as file:
            assert file.tell() == offset
            assert (home / "docs" / "a.txt").read_bytes() == b"0123456789"


def test_rest_offset_at_end_resumes(fs: Filesystem, home: Path) -> None:
    with fs.open_write("/docs/a.txt", offset=10) as file:
        file.write(b"!")
    assert (home / "docs" / "a.txt").read_bytes() == b"0123456789!"


def test_rest_offset_beyond_end_is_refused_and_harmless(fs: Filesystem, home: Path) -> None:
    with pytest.raises(FilesystemError) as caught:
        fs.open_write("/docs/a.txt", offset=20)
    assert "restart offset 20 is beyond the end of the file (size 10)" in str(caught.value)
    assert (home / "docs" / "a.txt").read_bytes() == b"0123456789"
    with pytest.raises(FilesystemError, match="size 0"):
        fs.open_write("/missing.txt", offset=1)
    assert not (home / "missing.txt").exists()


def test_append_writes_at_end_and_creates(fs: Filesystem, home: Path) -> None:
    with fs.open_write("/b.bin", append=True) as file:
        file.write(b"cc")
    assert (home / "b.bin").read_bytes() == b"bbcc"
    with fs.open_write("/fresh.log", append=True) as file:
        file.write(b"one")
    assert (home / "fresh.log").read_bytes() == b"one"


def test_open_write_on_directory_is_refused(fs: Filesystem) -> None:
    with pytest.raises(FilesystemError, match="Is a directory"):
        fs.open_write("/docs")


def test_stou_names_are_unique(fs: Filesystem, home: Path) -> None:
    (home / "docs" / "up.bin").write_bytes(b"original")
    paths = []
    for index in range(3):
        path, file = fs.create_unique("/docs", "up.bin")
        with file:
            file.write(str(index).encode())
        paths.append(path)
    assert paths == ["/docs/up.bin.1", "/docs/up.bin.2", "/docs/up.bin.3"]
    assert (home / "docs" / "up.bin").read_bytes() == b"original"
    assert (home / "docs" / "up.bin.2").read_bytes() == b"1"


def test_stou_uses_the_plain_name_when_free(fs: Filesystem, home: Path) -> None:
    path, file = fs.create_unique("/", "upload")
    file.close()
    assert path == "/upload"
    assert (home / "upload").is_file()


def test_stou_never_follows_an_existing_link(fs: Filesystem, home: Path, outside: Path) -> None:
    (home / "up").symlink_to(outside / "planted.txt")  # dangling, pointing out
    path, file = fs.create_unique("/", "up")
    file.close()
    assert path == "/up.1"
    assert not (outside / "planted.txt").exists()


def test_stou_refuses_a_stem_with_a_slash(fs: Filesystem) -> None:
    with pytest.raises(FilesystemError, match="not a usable file name"):
        fs.create_unique("/", "../x")


# -- changes -------------------------------------------------------------------------


def test_mkdir_rmdir_round_trip(fs: Filesystem, home: Path) -> None:
    fs.mkdir("/docs/new")
    assert (home / "docs" / "new").is_dir()
    with pytest.raises(FilesystemError, match=rf"^/docs/new: {FILE_EXISTS}$"):
        fs.mkdir("/docs/new")
    fs.rmdir("/docs/new")
    assert not (home / "docs" / "new").exists()


def test_rmdir_of_non_empty_directory_fails(fs: Filesystem) -> None:
    with pytest.raises(FilesystemError, match=rf"^/docs: {NOT_EMPTY}$"):
        fs.rmdir("/docs")


def test_home_itself_cannot_be_removed_or_renamed(fs: Filesystem, home: Path) -> None:
    empty = LocalFilesystem(home / "docs")
    (home / "docs" / "a.txt").unlink()
    operations: list[Callable[[], object]] = [
        lambda: empty.rmdir("/"),
        lambda: empty.remove("/"),
        lambda: empty.rename("/", "/x"),
    ]
    for operation in operations:
        with pytest.raises(FilesystemError, match="your home directory"):
            operation()
    assert (home / "docs").is_dir()


def test_remove_deletes_files_but_not_directories(fs: Filesystem, home: Path) -> None:
    fs.remove("/b.bin")
    assert not (home / "b.bin").exists()
    with pytest.raises(FilesystemError, match="Is a directory"):
        fs.remove("/docs")
    assert (home / "docs").is_dir()


def test_rename_moves_and_reports_failures(fs: Filesystem, home: Path) -> None:
    fs.rename("/b.bin", "/docs/c.bin")
    assert (home / "docs" / "c.bin").read_bytes() == b"bb"
    with pytest.raises(FilesystemError, match=rf"^/gone -> /x: {NO_SUCH_FILE}$"):
        fs.rename("/gone", "/x")


def test_chmod_sets_permission_bits_only(fs: Filesystem, home: Path) -> None:
    fs.chmod("/b.bin", 0o600)
    assert stat.S_IMODE((home / "b.bin").stat().st_mode) == 0o600
    with pytest.raises(FilesystemError, match="use permission bits 000 to 777"):
        fs.chmod("/b.bin", 0o4755)
    assert stat.S_IMODE((home / "b.bin").stat().st_mode) == 0o600


def test_nul_byte_in_name_is_a_filesystem_error(fs: Filesystem) -> None:
    with pytest.raises(FilesystemError, match="invalid file name"):
        fs.open_write("/a\0b")
    assert not fs.is_file("/a\0b")


def test_errors_never_reveal_real_paths(fs: Filesystem, tmp_path: Path) -> None:
    failures: list[Callable[[], object]] = [
        lambda: fs.stat("/missing"),
        lambda: fs.lstat("/missing"),
        lambda: fs.list_dir("/missing"),
        lambda: fs.open_read("/missing"),
        lambda: fs.open_write("/missing/x"),
        lambda: fs.mkdir("/missing/x"),
        lambda: fs.rmdir("/missing"),
        lambda: fs.remove("/missing"),
        lambda: fs.rename("/missing", "/x"),
        lambda: fs.chmod("/missing", 0o644),
        lambda: fs.create_unique("/missing", "x"),
    ]
    for failure in failures:
        with pytest.raises(FilesystemError) as caught:
            failure()
        assert str(tmp_path) not in str(caught.value)
        assert str(caught.value).startswith("/missing")
