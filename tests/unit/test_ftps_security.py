"""FTPS pieces without a network: the RFC 4217 replies, TLS settings, certificates, reload."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from pathlib import Path

import pytest

from ketch.config import ConfigError, load_config
from ketch.protocol.security import (
    AuthMechanism,
    TlsState,
    auth_reply,
    command_refusal,
    pbsz_reply,
    prot_reply,
)
from ketch.server.tls import ServerTls, certificate_problem, make_server_context
from ketch.tools.certificates import (
    describe_certificate,
    ensure_serving_certificate,
    validity_warning,
    write_certificate,
)

# -- the protocol decisions --------------------------------------------------------


def test_auth_is_refused_without_a_certificate_and_names_the_settings() -> None:
    (code, text), mechanism = auth_reply(TlsState(), "TLS", configured=False)
    assert code == 502 and mechanism is None
    assert "tls_certificate" in text


@pytest.mark.parametrize(
    ("argument", "mechanism", "protection"),
    [
        ("TLS", AuthMechanism.TLS, "C"),
        ("tls-c", AuthMechanism.TLS_C, "C"),
        ("SSL", AuthMechanism.SSL, "P"),
        ("TLS-P", AuthMechanism.TLS_P, "P"),
    ],
)
def test_auth_mechanisms_and_the_protection_they_imply(
    argument: str, mechanism: AuthMechanism, protection: str
) -> None:
    state = TlsState()
    (code, _), chosen = auth_reply(state, argument, configured=True)
    assert code == 234 and chosen is mechanism
    state.secured(mechanism)
    assert state.control and state.protection == protection


def test_unknown_auth_mechanism_gets_504_and_a_second_auth_503() -> None:
    (code, text), chosen = auth_reply(TlsState(), "KERBEROS_V4", configured=True)
    assert (code, chosen) == (504, None) and "AUTH TLS" in text
    (code, _), _ = auth_reply(TlsState(control=True), "TLS", configured=True)
    assert code == 503


def test_pbsz_and_prot_follow_rfc_4217() -> None:
    state = TlsState()
    assert pbsz_reply(state, "0")[0] == 503
    assert prot_reply(state, "P")[0] == 503
    state.secured(AuthMechanism.TLS)
    assert prot_reply(state, "P") == (503, "Send PBSZ 0 before PROT (RFC 4217).")
    assert prot_reply(state, "C")[0] == 200  # ftplib's prot_c sends no PBSZ
    assert pbsz_reply(state, "x")[0] == 501
    assert pbsz_reply(state, "1024") == (200, "PBSZ=0")
    assert prot_reply(state, "p")[0] == 200 and state.protection == "P"
    assert prot_reply(state, "S")[0] == 536
    assert prot_reply(state, "E")[0] == 536
    assert prot_reply(state, "Q")[0] == 504
    assert state.protection == "P"  # refused levels change nothing


@pytest.mark.parametrize(
    ("state", "buffer_size_set", "protection"),
    [
        (TlsState(control=True, mechanism=AuthMechanism.TLS), False, "C"),
        (TlsState(control=True, mechanism=AuthMechanism.SSL), False, "P"),  # AUTH SSL implies P
        (TlsState.implicit(), True, "P"),  # the implicit port starts with PBSZ 0 and PROT P
    ],
)
def test_rein_resets_pbsz_and_prot_to_where_the_secured_connection_began(
    state: TlsState, buffer_size_set: bool, protection: str
) -> None:
    control = state.control
    state.buffer_size_set, state.protection = True, "C" if protection == "P" else "P"
    state.reinitialize()
    assert state.control is control  # REIN is no CCC: TLS stays on the control connection
    assert (state.buffer_size_set, state.protection) == (buffer_size_set, protection)


def test_tls_required_refuses_logins_and_clear_transfers() -> None:
    clear, secured = TlsState(), TlsState.implicit()
    assert command_refusal("off", clear, "USER") is None
    refusal = command_refusal("control", clear, "USER")
    assert refusal is not None and refusal[0] == 530 and "AUTH TLS" in refusal[1]
    assert command_refusal("control", clear, "LIST") is None
    assert command_refusal("control", secured, "PASS") is None
    private = TlsState(control=True, buffer_size_set=True, protection="C")
    refusal = command_refusal("all", private, "RETR")
    assert refusal is not None and refusal[0] == 521 and "PROT P" in refusal[1]
    assert command_refusal("all", secured, "STOR") is None
    assert command_refusal("all", private, "CWD") is None
    # RFC 2228: 534 for a level the server will not accept; P, and PROT without AUTH
    # (PROT's own 503 tells to send AUTH TLS), go on to the handler.
    refusal = command_refusal("all", secured, "PROT", " c")
    assert refusal is not None and refusal[0] == 534 and "send PROT P" in refusal[1]
    assert command_refusal("all", secured, "PROT", "P") is None
    assert command_refusal("all", clear, "PROT", "C") is None
    assert command_refusal("control", secured, "PROT", "C") is None


# -- settings -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("pair")
    files = write_certificate(directory, ["localhost", "127.0.0.1"], days=30)
    return files.certificate, files.key


def problems(tmp_path: Path, **settings: object) -> str:
    with pytest.raises(ConfigError) as error:
        load_config(None, {"root": str(tmp_path), **settings})
    return str(error.value)


def test_a_good_pair_loads(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    certificate, key = pair
    config = load_config(
        None, {"root": str(tmp_path), "tls_certificate": str(certificate), "tls_key": str(key)}
    )
    assert config.tls_certificate == certificate and config.tls_required == "off"
    assert config.tls_require_session_reuse is True


def test_missing_and_mismatched_files_name_the_setting_and_the_fix(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    certificate, key = pair
    missing = problems(tmp_path, tls_certificate=str(tmp_path / "none.crt"))
    assert "tls_certificate" in missing and "no such file" in missing and "ketch cert" in missing
    other = write_certificate(tmp_path / "other", ["other"], days=1)
    mismatch = problems(tmp_path, tls_certificate=str(certificate), tls_key=str(other.key))
    assert "tls_key" in mismatch and "is not the key of the certificate" in mismatch
    no_key = problems(tmp_path, tls_certificate=str(certificate))
    assert "set tls_key" in no_key
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    assert "is not a PEM certificate" in problems(
        tmp_path, tls_certificate=str(garbage), tls_key=str(key)
    )


def test_a_certificate_path_with_a_nul_byte_is_a_problem_not_an_exception() -> None:
    # open() raises ValueError ("embedded null byte"), not OSError.
    problem = certificate_problem(Path("a\0b.crt"), None)
    assert problem is not None and problem.key == "tls_certificate"
    assert problem.message.startswith("the path holds a NUL byte (\\x00)")
    assert problem.message.endswith("; remove it")


def test_tls_settings_without_a_certificate_are_refused(tmp_path: Path) -> None:
    assert "needs a certificate" in problems(tmp_path, tls_required="control")
    assert "needs a certificate" in problems(tmp_path, implicit_tls_port=990)
    assert "tls_required" in problems(tmp_path, tls_required="sometimes")


def test_implicit_tls_needs_one_worker(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    certificate, key = pair
    text = problems(
        tmp_path,
        tls_certificate=str(certificate),
        tls_key=str(key),
        implicit_tls_port=990,
        workers=2,
    )
    assert "implicit_tls_port" in text and "workers" in text


def test_certificate_paths_in_a_file_are_relative_to_it(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    certificate, key = pair
    directory = tmp_path / "etc"
    directory.mkdir()
    (directory / "server.crt").write_bytes(certificate.read_bytes())
    (directory / "server.key").write_bytes(key.read_bytes())
    path = directory / "ketch.toml"
    path.write_text(
        f'root = "{tmp_path}"\ntls_certificate = "server.crt"\ntls_key = "server.key"\n'
    )
    config = load_config(path)
    assert config.tls_certificate == directory / "server.crt"


# -- certificates -------------------------------------------------------------------


def test_the_serving_certificate_is_kept_until_the_names_change(tmp_path: Path) -> None:
    first, made = ensure_serving_certificate(["localhost", "127.0.0.1"], tmp_path)
    assert made and first.key.stat().st_mode & 0o777 == 0o600
    again, made_again = ensure_serving_certificate(["localhost"], tmp_path)
    assert not made_again and again.fingerprint == first.fingerprint
    renamed, made_new = ensure_serving_certificate(["localhost", "ftp.example.org"], tmp_path)
    assert made_new and renamed.fingerprint != first.fingerprint
    assert "ftp.example.org" in renamed.hosts
    left = renamed.not_after - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=360) < left <= datetime.timedelta(days=366)


def test_certificate_dates_are_warned_about_until_two_weeks_before_the_end(
    pair: tuple[Path, Path],
) -> None:
    files = describe_certificate(*pair)  # valid for 30 days from now
    start, end = files.not_before, files.not_after
    assert validity_warning(files) is None
    assert validity_warning(files, end - datetime.timedelta(days=15)) is None
    soon = validity_warning(files, end - datetime.timedelta(days=13, hours=1))
    assert soon is not None and "expires in 13 day(s)" in soon and str(files.certificate) in soon
    late = validity_warning(files, end - datetime.timedelta(hours=1))
    assert late is not None and "expires within a day" in late
    expired = validity_warning(files, end)
    assert expired is not None and "has expired" in expired and "ketch cert" in expired
    early = validity_warning(files, start - datetime.timedelta(seconds=1))
    assert early is not None and "is not valid yet" in early and "clock" in early


def test_the_context_allows_tls_1_2_and_newer_only(pair: tuple[Path, Path]) -> None:
    context = make_server_context(*pair)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION


def _served_certificate(context: ssl.SSLContext) -> bytes:
    """The DER certificate a TLS client gets from ``context`` (a real loopback handshake)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass
        finally:
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with client.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    thread.join(timeout=5)
    assert der is not None
    return der


def test_reload_serves_a_renewed_certificate_and_keeps_the_old_one_on_errors(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    certificate, key = pair
    tls = ServerTls(certificate, key)
    before = _served_certificate(tls.context)
    renewed = write_certificate(tmp_path / "renewed", ["localhost"], days=90)
    config = load_config(
        None,
        {
            "root": str(tmp_path),
            "tls_certificate": str(renewed.certificate),
            "tls_key": str(renewed.key),
        },
    )
    tls.reload(config)
    after = _served_certificate(tls.context)
    assert after != before
    assert ssl.DER_cert_to_PEM_cert(after).strip() == renewed.certificate.read_text().strip()
    # A pair that went bad after validation (here: the key replaced) keeps the last good one.
    renewed.key.write_bytes(key.read_bytes())
    tls.reload(config)
    assert _served_certificate(tls.context) == after
