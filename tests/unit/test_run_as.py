"""run_as checks that need no root: who may use it, and the start-up access report."""

from __future__ import annotations

import logging
import os
import pwd
from pathlib import Path

import pytest

from ketch.config import load_config
from ketch.server.privileges import PrivilegeError, access_problems, resolve_run_as


def test_run_as_unset_as_root_warns_and_stays(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with caplog.at_level(logging.WARNING, logger="ketch.server"):
        assert resolve_run_as(None) is None
    assert "running as root without run_as" in caplog.text


def test_run_as_unset_as_a_user_is_silent(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert resolve_run_as(None) is None
    assert caplog.text == ""


def test_run_as_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    name = pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PrivilegeError, match="needs the server to be started as root"):
        resolve_run_as(name)


def test_run_as_unknown_user() -> None:
    with pytest.raises(PrivilegeError, match="no such user"):
        resolve_run_as("no-such-user-for-ketch")


def test_run_as_root_itself_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(PrivilegeError, match="unprivileged user"):
        resolve_run_as("root")


def test_access_problems_name_each_unusable_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unreadable, read_only = tmp_path / "unreadable", tmp_path / "read-only"
    unreadable.mkdir()
    read_only.mkdir()
    config_file = tmp_path / "ketch.toml"
    config_file.write_text("")
    config = load_config(
        None,
        {
            "root": str(unreadable),
            "anonymous": {"enabled": True},
            "users": [
                {
                    "name": "w",
                    "password_hash": _HASH,
                    "home": str(read_only),
                    "permissions": ["all"],
                },
                {"name": "r", "password_hash": _HASH, "home": str(read_only)},
            ],
        },
    )
    # What run_as may do, as os.access would answer once root is dropped.
    allowed = {unreadable: 0, read_only: os.R_OK | os.X_OK, config_file: 0}

    def access(path: Path, mode: int) -> bool:
        return mode & allowed[Path(path)] == mode

    monkeypatch.setattr(os, "access", access)
    problems = access_problems(config, "me", config_file)
    assert len(problems) == 3, problems
    assert "root (anonymous)" in problems[0] and "me cannot read it" in problems[0]
    assert "users[0].home (w)" in problems[1] and "uploads will fail" in problems[1]
    assert "SIGHUP cannot reload it" in problems[2]
    allowed.update({unreadable: 7, read_only: 7, config_file: 7})
    assert access_problems(config, "me", config_file) == []


_HASH = "$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ$ZmFrZWhhc2hmYWtlaGFzaA"
