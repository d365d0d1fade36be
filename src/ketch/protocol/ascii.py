"""Streaming line-ending conversion for TYPE A (ASCII) transfers.

RFC 959 puts text on the wire with CRLF line ends; files on this side use LF.
Both converters work on arbitrary chunks of a stream: the only state carried
between chunks is whether the previous chunk ended in a CR, which is all a
CR|LF pair split across two reads needs. bytes.replace does the real work, so
64 KiB chunks cost a couple of C-level passes, not a Python loop per byte.
"""

from __future__ import annotations

__all__ = ["AsciiDecoder", "AsciiEncoder"]


class AsciiEncoder:
    """Local to network: each LF not already preceded by CR becomes CRLF.

    Existing CRLF pairs are left alone so a file that already has them is not
    sent with CR CR LF.
    """

    def __init__(self) -> None:
        self._after_cr = False

    def convert(self, chunk: bytes) -> bytes:
        """Convert the next chunk of the stream."""
        if not chunk:
            return b""
        head = b""
        if self._after_cr and chunk[0] == 0x0A:
            # This LF completes a CRLF begun in the previous chunk.
            head, chunk = b"\n", chunk[1:]
        self._after_cr = chunk.endswith(b"\r") if chunk else False
        # Collapse CRLF first so the second pass cannot double its CR.
        return head + chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    def flush(self) -> bytes:
        """End of stream; nothing is ever held back, present for symmetry."""
        self._after_cr = False
        return b""


class AsciiDecoder:
    """Network to local: CRLF becomes LF, a lone CR is kept as data."""

    def __init__(self) -> None:
        self._held_cr = False

    def convert(self, chunk: bytes) -> bytes:
        """Convert the next chunk; a trailing CR waits to see what follows it."""
        if self._held_cr:
            chunk = b"\r" + chunk
            self._held_cr = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
            self._held_cr = True
        return chunk.replace(b"\r\n", b"\n")

    def flush(self) -> bytes:
        """End of stream: a held CR had no LF after it, so it was data."""
        if self._held_cr:
            self._held_cr = False
            return b"\r"
        return b""
