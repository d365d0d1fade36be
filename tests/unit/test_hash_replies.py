"""How the client reads a server's hash support (FEAT) and its hash replies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ketch.protocol.hashes import hash_reply, new_digest
from ketch.protocol.reply_values import (
    HashMethod,
    choose_hash_method,
    parse_hash_feature,
    parse_hash_reply,
    parse_x_hash_reply,
)

SHA256_OF_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_hash_feature_lists_algorithms_and_the_selected_one() -> None:
    assert parse_hash_feature("SHA-256*;SHA-1;MD5;CRC32") == (
        ["SHA-256", "SHA-1", "MD5", "CRC32"],
        "SHA-256",
    )
    assert parse_hash_feature("sha-1;md5*") == (["SHA-1", "MD5"], "MD5")
    assert parse_hash_feature("") == ([], None)


@pytest.mark.parametrize(
    ("features", "algorithm", "expected"),
    [
        ({"HASH": "SHA-1;SHA-256*;MD5"}, None, HashMethod("HASH", "SHA-256")),
        ({"HASH": "MD5*;CRC32"}, None, HashMethod("HASH", "MD5")),
        ({"HASH": "SHA-1*", "XSHA256": ""}, None, HashMethod("HASH", "SHA-1")),
        ({"XMD5": "", "XSHA1": "", "XCRC": ""}, None, HashMethod("XSHA1", "SHA-1")),
        ({"HASH": "SHA-256*;CRC32"}, "crc32", HashMethod("HASH", "CRC32")),
        ({"HASH": "SHA-256*", "XMD5": ""}, "MD5", HashMethod("XMD5", "MD5")),
        ({"HASH": "SHA-512*;BLAKE2"}, None, None),  # nothing ketch can compute locally
        ({"MDTM": "", "SIZE": ""}, None, None),
        ({"HASH": "SHA-256*"}, "MD5", None),
    ],
)
def test_the_best_offered_hash_method_is_chosen(
    features: dict[str, str], algorithm: str | None, expected: HashMethod | None
) -> None:
    assert choose_hash_method(features, algorithm) == expected


def test_hash_reply_gives_the_digest_even_when_the_path_has_spaces() -> None:
    text = f"SHA-256 0-2 {SHA256_OF_ABC.upper()} a file 0-1 with spaces"
    assert parse_hash_reply(text, "SHA-256") == SHA256_OF_ABC
    assert parse_hash_reply(f"SHA-256 {SHA256_OF_ABC} f", "SHA-256") == SHA256_OF_ABC


@pytest.mark.parametrize(
    "text",
    [
        f"SHA-1 0-2 {SHA256_OF_ABC} f",  # another algorithm than asked for
        "SHA-256 0-2 abc f",  # too short
        "SHA-256 0-2",
        "SHA-256 0-2 not-hex-at-all f",
        "",
    ],
)
def test_hash_reply_that_does_not_answer_the_question_gives_none(text: str) -> None:
    assert parse_hash_reply(text, "SHA-256") is None


def test_x_command_replies_are_read_with_or_without_a_path() -> None:
    assert parse_x_hash_reply(SHA256_OF_ABC, "SHA-256") == SHA256_OF_ABC
    assert parse_x_hash_reply(f"f.txt {SHA256_OF_ABC}", "SHA-256") == SHA256_OF_ABC
    assert parse_x_hash_reply("352441C2", "CRC32") == "352441c2"
    assert parse_x_hash_reply("1A2B3", "CRC32") == "0001a2b3"  # leading zeros dropped
    assert parse_x_hash_reply("File not found", "MD5") is None


@given(
    algorithm=st.sampled_from(["SHA-256", "SHA-1", "MD5", "CRC32"]),
    data=st.binary(),
    offset=st.integers(0, 10**12),
    path=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1).filter(str.strip),
)
def test_what_the_server_writes_the_client_reads(
    algorithm: str, data: bytes, offset: int, path: str
) -> None:
    """ketch's server's 213 text (ketch.protocol.hashes) parses back to the same digest."""
    digest = new_digest(algorithm)
    digest.update(data)
    text = hash_reply(algorithm, offset, len(data), digest.hexdigest(), path)
    assert parse_hash_reply(text, algorithm) == digest.hexdigest()
