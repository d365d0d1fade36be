"""Tests for streaming TYPE A line-ending conversion."""

from __future__ import annotations

import itertools
import time

from hypothesis import given
from hypothesis import strategies as st

from ketch.protocol.ascii import AsciiDecoder, AsciiEncoder


def encode_chunks(chunks: list[bytes]) -> bytes:
    encoder = AsciiEncoder()
    return b"".join(encoder.convert(chunk) for chunk in chunks) + encoder.flush()


def decode_chunks(chunks: list[bytes]) -> bytes:
    decoder = AsciiDecoder()
    return b"".join(decoder.convert(chunk) for chunk in chunks) + decoder.flush()


# --- encoder -----------------------------------------------------------------


def test_encoder_turns_lf_into_crlf() -> None:
    assert AsciiEncoder().convert(b"a\nb\n\n") == b"a\r\nb\r\n\r\n"


def test_encoder_leaves_existing_crlf_alone() -> None:
    assert AsciiEncoder().convert(b"a\r\nb\n") == b"a\r\nb\r\n"


def test_encoder_keeps_lone_cr() -> None:
    assert AsciiEncoder().convert(b"a\rb\r") == b"a\rb\r"


def test_encoder_cr_lf_after_cr_gets_no_extra_cr() -> None:
    assert AsciiEncoder().convert(b"\r\r\n") == b"\r\r\n"


def test_encoder_does_not_double_cr_split_across_chunks() -> None:
    assert encode_chunks([b"a\r", b"\nb"]) == b"a\r\nb"


def test_encoder_lf_after_chunk_not_ending_in_cr_is_converted() -> None:
    assert encode_chunks([b"a", b"\nb"]) == b"a\r\nb"


def test_encoder_remembers_cr_across_empty_chunks() -> None:
    assert encode_chunks([b"a\r", b"", b"\n"]) == b"a\r\n"


def test_encoder_lf_only_chunk_clears_the_cr_state() -> None:
    assert encode_chunks([b"\r", b"\n", b"\n"]) == b"\r\n\r\n"


# --- decoder -----------------------------------------------------------------


def test_decoder_turns_crlf_into_lf() -> None:
    assert decode_chunks([b"a\r\nb\r\n"]) == b"a\nb\n"


def test_decoder_keeps_lone_cr_and_bare_lf() -> None:
    assert decode_chunks([b"a\rb\nc"]) == b"a\rb\nc"


def test_decoder_only_the_cr_next_to_lf_is_removed() -> None:
    assert decode_chunks([b"\r\r\n"]) == b"\r\n"


def test_decoder_holds_a_trailing_cr_until_it_sees_the_next_byte() -> None:
    decoder = AsciiDecoder()
    assert decoder.convert(b"a\r") == b"a"
    assert decoder.convert(b"\nb") == b"\nb"


def test_decoder_releases_a_held_cr_not_followed_by_lf() -> None:
    decoder = AsciiDecoder()
    assert decoder.convert(b"a\r") == b"a"
    assert decoder.convert(b"b") == b"\rb"


def test_decoder_flush_emits_a_final_cr() -> None:
    decoder = AsciiDecoder()
    assert decoder.convert(b"end\r") == b"end"
    assert decoder.flush() == b"\r"
    assert decoder.flush() == b""


def test_decoder_holds_cr_through_empty_chunks() -> None:
    assert decode_chunks([b"\r", b"", b"\n"]) == b"\n"


# --- properties --------------------------------------------------------------

# Mostly CR, LF and one ordinary byte, so boundaries land between CR and LF often.
line_ending_heavy = st.lists(st.sampled_from([b"\r", b"\n", b"x", b"\r\n"]), max_size=60).map(
    b"".join
)
stream = st.one_of(line_ending_heavy, st.binary(max_size=200))


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    data = draw(stream)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(chunked())
def test_encoder_output_does_not_depend_on_chunking(sample: tuple[bytes, list[bytes]]) -> None:
    data, chunks = sample
    assert encode_chunks(chunks) == encode_chunks([data])


@given(chunked())
def test_decoder_output_does_not_depend_on_chunking(sample: tuple[bytes, list[bytes]]) -> None:
    data, chunks = sample
    assert decode_chunks(chunks) == decode_chunks([data])


@given(chunked())
def test_encoder_output_has_no_bare_lf(sample: tuple[bytes, list[bytes]]) -> None:
    encoded = encode_chunks(sample[1])
    assert encoded.count(b"\n") == encoded.count(b"\r\n")


@given(chunked())
def test_decoder_matches_a_whole_stream_replace(sample: tuple[bytes, list[bytes]]) -> None:
    data, chunks = sample
    assert decode_chunks(chunks) == data.replace(b"\r\n", b"\n")


@given(data=st.binary().map(lambda b: b.replace(b"\r", b"")), cuts=st.lists(st.integers(0, 300)))
def test_decode_of_encode_is_identity_without_cr(data: bytes, cuts: list[int]) -> None:
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    encoded = encode_chunks(chunks)
    assert decode_chunks([encoded[i : i + 7] for i in range(0, len(encoded), 7)]) == data


# --- speed -------------------------------------------------------------------


def test_64k_chunks_convert_quickly() -> None:
    chunk = (b"some text of a typical line length\n" * 2000)[:65536]
    encoder, decoder = AsciiEncoder(), AsciiDecoder()
    started = time.perf_counter()
    for _ in range(256):  # 16 MiB each way
        decoder.convert(encoder.convert(chunk))
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"16 MiB took {elapsed:.3f} s"
