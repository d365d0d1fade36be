"""Many short FTP sessions at once, from one asyncio client: login, one RETR, QUIT.

A plain client on raw streams (no ftplib threads, no ketch client), so that
hundreds of sessions cost the test little and every step is checked:
replies by code, the downloaded size, and the final 226.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

SESSION_TIMEOUT = 30.0


class SessionFailed(Exception):
    pass


@dataclass
class BurstResult:
    sessions: int
    seconds: float
    failures: list[str] = field(default_factory=list)


async def _reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    line = await reader.readline()
    if len(line) < 4:
        raise SessionFailed(f"control connection closed or short reply {line!r}")
    code = line[:3]
    text = line.decode("utf-8", "replace")
    if line[3:4] == b"-":  # multi-line: until "CODE " starts a line
        while True:
            more = await reader.readline()
            if not more:
                raise SessionFailed("control connection closed in a multi-line reply")
            text += more.decode("utf-8", "replace")
            if more[:3] == code and more[3:4] == b" ":
                break
    return int(code), text.strip()


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str, expected: int
) -> str:
    writer.write(line.encode() + b"\r\n")
    code, text = await _reply(reader)
    if code != expected:
        raise SessionFailed(f"{line.split()[0]}: expected {expected}, got {text!r}")
    return text


async def one_session(host: str, port: int, path: str, size: int) -> None:
    """Log in anonymously, download ``path`` (``size`` bytes) over EPSV, quit."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        code, text = await _reply(reader)
        if code != 220:
            raise SessionFailed(f"greeting: {text!r}")
        await _command(reader, writer, "USER anonymous", 331)
        await _command(reader, writer, "PASS burst@", 230)
        await _command(reader, writer, "TYPE I", 200)
        epsv = await _command(reader, writer, "EPSV", 229)
        data_port = int(epsv.split("(|||")[1].split("|")[0])
        data_reader, data_writer = await asyncio.open_connection(host, data_port)
        try:
            await _command(reader, writer, f"RETR {path}", 150)
            received = 0
            while chunk := await data_reader.read(1 << 16):
                received += len(chunk)
        finally:
            data_writer.close()
        code, text = await _reply(reader)
        if code != 226:
            raise SessionFailed(f"end of RETR: {text!r}")
        if received != size:
            raise SessionFailed(f"RETR gave {received} bytes, not {size}")
        await _command(reader, writer, "QUIT", 221)
    finally:
        writer.close()


async def _burst(
    host: str, port: int, path: str, size: int, sessions: int, concurrency: int
) -> BurstResult:
    gate = asyncio.Semaphore(concurrency)
    result = BurstResult(sessions, 0.0)

    async def run(number: int) -> None:
        async with gate:
            try:
                async with asyncio.timeout(SESSION_TIMEOUT):
                    await one_session(host, port, path, size)
            except (OSError, SessionFailed, TimeoutError, ValueError, IndexError) as error:
                result.failures.append(f"session {number}: {type(error).__name__}: {error}")

    started = time.perf_counter()
    await asyncio.gather(*(run(number) for number in range(sessions)))
    result.seconds = time.perf_counter() - started
    return result


def burst(
    host: str, port: int, path: str, size: int, *, sessions: int, concurrency: int
) -> BurstResult:
    """Run ``sessions`` sessions, at most ``concurrency`` at a time; failures are collected."""
    return asyncio.run(_burst(host, port, path, size, sessions, concurrency))
