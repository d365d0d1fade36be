"""The client's TLS settings: the context it makes and the errors it explains."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path

import pytest
import trustme

from ketch.client import Client, TlsFailed
from ketch.client.tls import TlsSettings, certificate_problem


def test_the_default_context_checks_certificate_and_host_name_with_tls_1_2_or_later() -> None:
    context = TlsSettings().make_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_insecure_turns_off_both_checks() -> None:
    context = TlsSettings(verify=False).make_context()
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


def test_a_context_of_ones_own_is_used_as_it_is() -> None:
    mine = ssl.create_default_context()
    assert TlsSettings(context=mine, cafile="/nonexistent").make_context() is mine


def test_a_cafile_that_holds_no_certificate_says_what_to_give(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(TlsFailed, match=r"cannot load CA certificates from .*ca\.pem.*PEM file"):
        TlsSettings(cafile=str(bad)).make_context()


def test_an_untrusted_certificate_names_the_reason_and_the_options() -> None:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "self-signed certificate"
    message = str(certificate_problem(error, "ftp.example.com"))
    assert "TLS certificate of ftp.example.com is not trusted: self-signed certificate" in message
    assert "--cacert FILE" in message and "--insecure" in message


def handshake_error(tmp_path: Path, certified: str, asked_for: str) -> ssl.SSLError:
    """The real error of a handshake with a certificate for ``certified`` (trusted CA)."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(certified).configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=10)
        conn, _ = listener.accept()
        conn.settimeout(10)
        thread = threading.Thread(target=_serve_handshake, args=(server_context, conn))
        thread.start()
        with pytest.raises(ssl.SSLError) as caught:
            client_context.wrap_socket(client, server_hostname=asked_for)
        client.close()
        thread.join(10)
    return caught.value


def _serve_handshake(context: ssl.SSLContext, conn: socket.socket) -> None:
    with contextlib.suppress(ssl.SSLError, OSError), context.wrap_socket(conn, server_side=True):
        pass


@pytest.mark.parametrize("asked_for", ["127.0.0.1", "ftp.example.com"])
def test_a_certificate_for_other_names_says_so_not_to_give_a_ca(
    tmp_path: Path, asked_for: str
) -> None:
    error = handshake_error(tmp_path, "other.example.net", asked_for)
    message = str(certificate_problem(error, asked_for))
    assert f"TLS certificate of {asked_for} does not name it" in message, message
    assert "--cacert" not in message and "--insecure" in message


def test_implicit_tls_defaults_to_port_990_and_explicit_to_21() -> None:
    assert Client("h", tls="implicit").port == 990
    assert Client("h", tls="explicit").port == 21
    assert Client("h").port == 21 and Client("h").tls is None
    assert Client("h", 2990, tls="implicit").port == 2990
