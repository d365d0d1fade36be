"""handshake_failure: the 522 for a failed data-connection handshake names the likely fix.

OpenSSL's reasons are the input, as the server sees them (ssl.SSLError.reason).
"""

from __future__ import annotations

import ssl

import pytest

from ketch.server.tls_data import handshake_failure


def _failure(reason: str) -> ssl.SSLError:
    error = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    error.reason = reason  # type: ignore[misc]  # set by the ssl module's C code otherwise
    return error


@pytest.mark.parametrize(
    ("reason", "advice"),
    [
        ("TLSV1_ALERT_UNKNOWN_CA", "the client does not trust this server's certificate"),
        ("SSLV3_ALERT_BAD_CERTIFICATE", "the client does not trust this server's certificate"),
        ("WRONG_VERSION_NUMBER", "start TLS on the data connection after PROT P, or send PROT C"),
        ("UNSUPPORTED_PROTOCOL", "the client must use TLS 1.2 or newer"),
        ("TLSV1_ALERT_PROTOCOL_VERSION", "the client must use TLS 1.2 or newer"),
        ("DECRYPTION_FAILED", "start TLS on the data connection after PROT P, or send PROT C"),
    ],
)
def test_each_reason_gets_its_advice(reason: str, advice: str) -> None:
    text = handshake_failure(_failure(reason))
    assert text.startswith(f"the TLS handshake on the data connection failed ({reason}); ")
    assert advice in text, text
