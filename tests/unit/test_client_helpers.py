"""Pure helpers of the client: masking secrets and telling private addresses apart."""

from __future__ import annotations

import pytest

from ketch.cli.output import safe_text
from ketch.client.control import mask_secrets
from ketch.client.data_modes import is_unroutable
from ketch.client.errors import PermanentReplyError, TransientReplyError, reply_error
from ketch.protocol import Reply


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("PASS s3cret", "PASS ****"),
        ("pass s3cret", "pass ****"),
        ("ACCT billing", "ACCT ****"),
        ("USER alice", "USER alice"),
        ("PASV", "PASV"),
    ],
)
def test_passwords_never_reach_the_transcript(line: str, shown: str) -> None:
    assert mask_secrets(line) == shown


@pytest.mark.parametrize(
    "host",
    [
        "10.0.0.5",
        "192.168.1.2",
        "172.16.0.1",
        "127.0.0.2",
        "0.0.0.0",
        "169.254.1.1",
        "198.18.0.5",
        "100.64.1.1",
        "fd00::1",
        "::1",
        "fe80::1",
    ],
)
def test_private_and_special_addresses_are_unroutable(host: str) -> None:
    assert is_unroutable(host)


@pytest.mark.parametrize("host", ["203.0.113.300", "ftp.example.com", "8.8.8.8", "2001:4860::8888"])
def test_public_addresses_and_names_are_not_fixed_up(host: str) -> None:
    assert not is_unroutable(host)


def test_reply_errors_are_classed_by_code_and_read_as_one_line() -> None:
    transient = reply_error("STOR", Reply(451, ("Local error",)))
    permanent = reply_error("RETR", Reply(550, ("No such file", "really")))
    assert isinstance(transient, TransientReplyError)
    assert isinstance(permanent, PermanentReplyError)
    assert str(permanent) == (
        "RETR failed: 550 No such file really — check that the path exists and that this "
        "account may use it"
    )


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("caf\udce9.txt", "caf\\xe9.txt"),  # a Latin-1 name, kept as surrogate escapes
        ("a\x1b[31mred", "a?[31mred"),  # no terminal escapes
        ("new\nline", "new?line"),
        ("été.txt", "été.txt"),  # real UTF-8 stays
    ],
)
def test_names_on_status_lines_show_odd_bytes_plainly(name: str, shown: str) -> None:
    assert safe_text(name) == shown
