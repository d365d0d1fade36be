"""The session state machine, without sockets."""

from __future__ import annotations

import pytest

from ketch.protocol.session_state import (
    COMMANDS_BEFORE_LOGIN,
    TRANSFER_COMMANDS,
    LoginStage,
    SessionState,
)


def logged_in() -> SessionState:
    state = SessionState()
    state.begin_login("alice")
    state.login_succeeded()
    return state


def test_fresh_session_awaits_user_in_ascii_type() -> None:
    state = SessionState()
    assert state.stage is LoginStage.AWAITING_USER
    assert state.transfer_type == "A"  # RFC 959 default


@pytest.mark.parametrize("verb", ["LIST", "RETR", "STOR", "CWD", "PASV", "PORT", "STAT", "SITE"])
def test_commands_needing_login_are_refused_before_it(verb: str) -> None:
    assert not SessionState().may_run(verb, needs_login=True)
    assert logged_in().may_run(verb, needs_login=True)


def test_login_commands_and_feature_probes_run_before_login() -> None:
    state = SessionState()
    assert {"USER", "PASS", "QUIT", "FEAT", "OPTS"} <= COMMANDS_BEFORE_LOGIN
    assert all(state.may_run(verb, needs_login=True) for verb in COMMANDS_BEFORE_LOGIN)


def test_failed_login_returns_to_awaiting_user() -> None:
    state = SessionState()
    state.begin_login("alice")
    assert state.stage is LoginStage.AWAITING_PASSWORD
    state.login_failed()
    assert state.stage is LoginStage.AWAITING_USER and state.user_name is None


def test_user_while_logged_in_starts_a_new_login_and_keeps_the_transfer_type() -> None:
    # RFC 959 §4.1.1: USER flushes the login, and "all transfer parameters are unchanged".
    state = logged_in()
    state.transfer_type = "I"
    state.rename_from, state.restart_offset = "/a", 100
    state.begin_login("bob")
    assert state.stage is LoginStage.AWAITING_PASSWORD
    assert state.user_name == "bob" and state.transfer_type == "I"
    assert state.rename_from is None and state.restart_offset == 0


def test_rnfr_is_dropped_by_any_command_but_rnto() -> None:
    state = logged_in()
    state.rename_from = "/a"
    state.before_command("RNTO")
    assert state.rename_from == "/a"
    state.before_command("NOOP")
    assert state.rename_from is None


@pytest.mark.parametrize("verb", sorted(TRANSFER_COMMANDS))
def test_any_transfer_command_spends_a_pending_rest(verb: str) -> None:
    state = logged_in()
    state.restart_offset = 100
    state.before_command(verb)
    assert state.restart_offset == 0
    assert state.transfer_offset == (100 if verb in ("RETR", "STOR") else 0)
    state.before_command("RETR")  # a later transfer never sees the old offset
    assert state.transfer_offset == 0


@pytest.mark.parametrize("verb", ["PASV", "EPSV", "PORT", "TYPE", "NOOP"])
def test_rest_survives_data_setup_between_it_and_the_transfer(verb: str) -> None:
    state = logged_in()
    state.restart_offset = 7
    state.before_command(verb)
    state.before_command("RETR")
    assert state.transfer_offset == 7


def test_epsv_all_allows_only_epsv() -> None:
    state = logged_in()
    assert state.data_setup_allowed("PASV")
    state.epsv_all = True
    assert state.data_setup_allowed("EPSV")
    assert not any(state.data_setup_allowed(verb) for verb in ("PASV", "PORT", "EPRT"))


def test_epsv_all_outlasts_a_new_user_but_not_rein() -> None:
    state = logged_in()
    state.epsv_all = True
    state.begin_login("bob")
    assert not state.data_setup_allowed("PASV")
    state.reset()
    assert state.data_setup_allowed("PASV")


def test_reset_forgets_everything() -> None:
    state = logged_in()
    state.restart_offset, state.rename_from, state.epsv_all = 5, "/x", True
    state.reset()
    assert state == SessionState()
