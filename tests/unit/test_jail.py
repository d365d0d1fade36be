"""Path resolution and the home-directory jail, on real temporary directories."""

from __future__ import annotations

import itertools
import os
import posixpath
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ketch.server.filesystem import FilesystemError, PathEscapeError
from ketch.server.jail import Jail, link_stays_inside, resolve_virtual, virtual_path_in

# -- resolve_virtual -----------------------------------------------------------


@pytest.mark.parametrize(
    ("cwd", "argument", "expected"),
    [
        ("/", "a.txt", "/a.txt"),
        ("/docs", "a.txt", "/docs/a.txt"),
        ("/docs", "/a.txt", "/a.txt"),  # absolute ignores cwd
        ("/docs", "", "/docs"),  # empty means here
        ("/docs", ".", "/docs"),
        ("/docs/sub", "..", "/docs"),
        ("/docs", "sub/", "/docs/sub"),  # trailing slash dropped
        ("/docs", "a//b///c", "/docs/a/b/c"),
        ("/docs", "//etc//passwd", "/etc/passwd"),
        ("/", "./a/./b/.", "/a/b"),
        ("/docs", "~", "/"),  # the home, as proftpd and pure-ftpd read it
        ("/docs", "~/x", "/x"),
        ("/docs", "~/../../x", "/x"),  # and clipped there like any ".."
        ("/docs", "~root", "/docs/~root"),  # no other user's home: an ordinary name
        ("/docs", "./~", "/docs/~"),  # an entry named "~"
        ("/docs", "x/~", "/docs/x/~"),  # only a leading "~" is the home
        ("/docs", "/~", "/~"),
        ("/docs", "a..b", "/docs/a..b"),  # dots inside a name are just a name
        ("/docs", "...", "/docs/..."),
    ],
)
def test_resolves_relative_absolute_and_messy_paths(cwd: str, argument: str, expected: str) -> None:
    assert resolve_virtual(cwd, argument) == expected


@pytest.mark.parametrize(
    ("cwd", "argument"),
    [("/", ".."), ("/", "../../.."), ("/a", "../../etc"), ("/a/b", "/../../x/.."), ("/", "/..")],
)
def test_dotdot_never_climbs_above_home(cwd: str, argument: str) -> None:
    result = resolve_virtual(cwd, argument)
    assert ".." not in result.split("/")
    # Clipped at "/", like chroot: "../../etc" from /a is /etc, not above it.
    assert result in ("/", "/etc")


_segments = st.lists(
    st.sampled_from(["", ".", "..", "a", "b", "~", "é", "x y", "\udcff", "a..b"]),
    max_size=8,
)


@st.composite
def _paths(draw: st.DrawFn) -> str:
    text = "/".join(draw(_segments))
    return ("/" + text) if draw(st.booleans()) else text


@given(cwd_argument=_paths(), argument=_paths())
def test_resolve_virtual_is_absolute_clean_and_idempotent(cwd_argument: str, argument: str) -> None:
    cwd = resolve_virtual("/", cwd_argument)
    result = resolve_virtual(cwd, argument)

    assert result.startswith("/")
    assert result == "/" or not result.endswith("/")
    parts = result.split("/")[1:]
    assert result == "/" or all(part not in ("", ".", "..") for part in parts)
    # Idempotent: resolving a result again, from anywhere, changes nothing.
    assert resolve_virtual(result, "") == result
    assert resolve_virtual(cwd, result) == result
    assert resolve_virtual("/", result) == result


@given(cwd_argument=_paths(), argument=_paths())
def test_resolve_virtual_matches_posix_normalization_clipped_at_root(
    cwd_argument: str, argument: str
) -> None:
    cwd = resolve_virtual("/", cwd_argument)
    home_relative = argument == "~" or argument.startswith("~/")  # starts at the home, "/"
    written = "/" + argument[1:] if home_relative else argument
    combined = written if written.startswith("/") else f"{cwd}/{written}"
    # normpath clips ".." at "/" too; one leading slash avoids its "//" rule.
    expected = posixpath.normpath("/" + combined.lstrip("/"))
    assert resolve_virtual(cwd, argument) == expected


# -- Jail ------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "docs").mkdir(parents=True)
    (home / "docs" / "a.txt").write_text("a")
    return home


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    return outside


def test_root_maps_to_home_realpath(home: Path) -> None:
    assert Jail(home).real_path("/") == os.path.realpath(home)


def test_virtual_path_maps_inside_home(home: Path) -> None:
    assert Jail(home).real_path("/docs/a.txt") == str(home.resolve() / "docs" / "a.txt")


def test_home_given_through_a_symlink_is_stored_resolved(home: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(home)
    jail = Jail(alias)
    assert jail.home == home.resolve()
    assert jail.real_path("/docs") == str(home.resolve() / "docs")


def test_missing_home_is_refused_with_advice(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="create it or fix"):
        Jail(tmp_path / "nope")


def test_unnormalized_input_is_normalized_not_trusted(home: Path) -> None:
    # Even if a caller skipped resolve_virtual, ".." cannot leave the home.
    assert Jail(home).real_path("/../../docs/../docs") == str(home.resolve() / "docs")


def test_missing_tail_is_allowed_for_creation(home: Path) -> None:
    jail = Jail(home)
    assert jail.real_path("/docs/new/deeper.txt") == str(
        home.resolve() / "docs" / "new" / "deeper.txt"
    )


def test_symlink_to_outside_escapes(home: Path, outside: Path) -> None:
    (home / "out").symlink_to(outside)
    jail = Jail(home)
    with pytest.raises(PathEscapeError):
        jail.real_path("/out")
    with pytest.raises(PathEscapeError):
        jail.real_path("/out/secret.txt")
    with pytest.raises(PathEscapeError):
        jail.real_path("/out/not-yet-created.txt")


def test_not_following_the_final_link_allows_the_link_itself(home: Path, outside: Path) -> None:
    (home / "out").symlink_to(outside)
    jail = Jail(home)
    assert jail.real_path("/out", follow_final=False) == str(home.resolve() / "out")
    # ...but a link in the middle of the path is always followed.
    with pytest.raises(PathEscapeError):
        jail.real_path("/out/secret.txt", follow_final=False)


def test_dangling_symlink_to_outside_escapes(home: Path, tmp_path: Path) -> None:
    (home / "dangling").symlink_to(tmp_path / "does-not-exist")
    with pytest.raises(PathEscapeError):
        Jail(home).real_path("/dangling")


def test_relative_symlink_climbing_out_escapes(home: Path, outside: Path) -> None:
    (home / "docs" / "up").symlink_to("../../outside/secret.txt")
    with pytest.raises(PathEscapeError):
        Jail(home).real_path("/docs/up")


def test_symlink_inside_home_is_followed(home: Path) -> None:
    (home / "shortcut").symlink_to(home / "docs")
    assert Jail(home).real_path("/shortcut/a.txt") == str(home.resolve() / "docs" / "a.txt")


def test_sibling_with_home_as_prefix_is_outside(tmp_path: Path, home: Path) -> None:
    # "/tmp/x/home2" starts with "/tmp/x/home" as a string but is not inside it.
    sibling = tmp_path / "home2"
    sibling.mkdir()
    (home / "sib").symlink_to(sibling)
    with pytest.raises(PathEscapeError):
        Jail(home).real_path("/sib")


def test_escape_error_names_virtual_path_only(home: Path, outside: Path) -> None:
    (home / "out").symlink_to(outside)
    with pytest.raises(PathEscapeError) as caught:
        Jail(home).real_path("/out/secret.txt")
    message = str(caught.value)
    assert message == "/out/secret.txt: Permission denied (outside your home directory)"
    assert str(outside) not in message and str(home) not in message


def test_nul_byte_is_a_filesystem_error_not_a_crash(home: Path) -> None:
    with pytest.raises(FilesystemError, match="invalid file name"):
        Jail(home).real_path("/docs/a\0b")


def test_virtual_path_inverts_real_path(home: Path, outside: Path) -> None:
    jail = Jail(home)
    real_home = str(jail.home)
    assert virtual_path_in(real_home, jail.real_path("/docs/a.txt")) == "/docs/a.txt"
    assert virtual_path_in(real_home, str(home.resolve())) == "/"
    assert virtual_path_in(real_home, str(outside)) is None
    assert virtual_path_in(real_home, real_home + "-sibling/a.txt") is None
    assert virtual_path_in("/", "/etc/passwd") == "/etc/passwd"


def _tree_with_links(base: Path) -> Path:
    """A home with directories, a file, and symlinks inside, outside, relative and dangling."""
    home = base / "home"
    (home / "a" / "b").mkdir(parents=True)
    (home / "f").write_bytes(b"x")
    (base / "outside").mkdir()
    os.symlink("a", home / "in")  # relative, inside
    os.symlink(base / "outside", home / "out")  # absolute, outside
    os.symlink("../..", home / "a" / "up")  # climbs out through the home
    os.symlink("nowhere", home / "dangling")
    os.symlink("in/b", home / "chain")  # a link through a link
    return home


_NAMES = st.sampled_from(["a", "b", "f", "in", "out", "up", "dangling", "chain", "missing"])


@given(parts=st.lists(_NAMES, max_size=5))
def test_resolving_below_the_home_gives_what_realpath_gives(
    tmp_path_factory: pytest.TempPathFactory, parts: list[str]
) -> None:
    # The shortcut (no walk over the home's own components) must never differ from
    # os.path.realpath, links or not: the jail's containment check relies on it.
    home = _tree_with_links(tmp_path_factory.mktemp("jail"))
    jail = Jail(home)
    expected = os.path.realpath(os.path.join(os.path.realpath(home), *parts))
    assert jail._resolve(parts) == expected


_TARGET_PARTS = st.sampled_from(["a", "b", "in", "out", "up", "missing", "..", ".", "home"])
_STEPS = {"..": -1, ".": 0}  # how far each part of a path goes down (any name: 1)


@given(
    below=st.lists(st.sampled_from(["a", "b"]), max_size=2),
    parts=st.lists(_TARGET_PARTS, min_size=1, max_size=5),
    absolute=st.booleans(),
)
def test_a_link_target_stays_inside_only_if_written_and_followed_inside(
    tmp_path_factory: pytest.TempPathFactory, below: list[str], parts: list[str], absolute: bool
) -> None:
    # Followed: where realpath (what the jail follows) leads. Written: a relative target
    # never climbs above the home, and an absolute one is under it.
    home = os.path.realpath(_tree_with_links(tmp_path_factory.mktemp("links")))
    directory = os.path.join(home, *below)
    target = os.path.join(home, *parts) if absolute else "/".join(parts)
    followed = os.path.realpath(os.path.join(directory, target))
    if absolute:
        written = virtual_path_in(home, target) is not None
    else:
        depths = itertools.accumulate((_STEPS.get(part, 1) for part in parts), initial=len(below))
        written = min(depths) >= 0
    expected = written and virtual_path_in(home, followed) is not None
    assert link_stays_inside(home, directory, target) == expected


def test_a_relative_link_target_in_an_unknown_directory_is_not_taken_as_inside(
    home: Path,
) -> None:
    real_home = os.path.realpath(home)
    assert not link_stays_inside(real_home, None, "docs")
    assert link_stays_inside(real_home, None, f"{real_home}/docs")
