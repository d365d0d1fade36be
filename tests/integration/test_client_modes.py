"""The client's data-connection choices against real servers on loopback.

EPSV → PASV and EPRT → PORT fallbacks against vsftpd with the extended
commands denied (``cmds_denied``), the PASV address fix-up against a vsftpd
that advertises a private address, and active mode's refusal of data
connections from anyone but the server. Fallbacks that need a blocked or
unreachable path live in tests/lab (network namespaces).
"""

from __future__ import annotations

import asyncio
import contextlib
import ftplib
import io
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ketch.client import Client, DataConnectionFailed, ModeMemory

from conftest import PASSWORD, USER, RunningServer
from peer_servers import PeerServer

pytestmark = pytest.mark.peer

PRIVATE_ELSEWHERE = "198.18.0.5"  # private (RFC 2544), and not this machine
SHARED_ADDRESS_SPACE = "100.64.1.1"  # RFC 6598: a carrier-grade NAT's inside


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def peer_client(peer: PeerServer, **settings: Any) -> Client:
    return Client(
        peer.host,
        peer.port,
        user=peer.user,
        password=peer.password,
        data_connect_timeout=5,
        timeout=20,
        **settings,
    )


async def list_workdir(client: Client) -> tuple[list[str], str]:
    """Names in the writable directory, and the data command the listing used."""
    async with client as ftp:
        await ftp.cwd("pub")
        names = [entry.name for entry in await ftp.list()]
        result = await ftp.upload([b"x"], "mode-check.txt")
        return names, result.mode


def test_passive_falls_back_to_pasv_when_the_server_refuses_epsv(
    make_vsftpd: Callable[..., PeerServer], caplog: pytest.LogCaptureFixture
) -> None:
    peer = make_vsftpd(extra_config={"cmds_denied": "EPSV"})
    with caplog.at_level(logging.DEBUG, logger="ketch.client"):
        _, used = run(list_workdir(peer_client(peer, mode="passive")))
    assert used == "PASV"
    # EPSV is asked once, then the session remembers that it is refused.
    sent = [r.getMessage() for r in caplog.records if r.getMessage().startswith("> ")]
    assert sent.count("> EPSV") == 1
    assert sent.count("> PASV") == 2


def test_epsv_pinned_reports_the_refusal_instead_of_falling_back(
    make_vsftpd: Callable[..., PeerServer],
) -> None:
    peer = make_vsftpd(extra_config={"cmds_denied": "EPSV"})
    with pytest.raises(DataConnectionFailed) as failed:
        run(list_workdir(peer_client(peer, mode="passive", passive_command="EPSV")))
    assert "the server refused passive mode: EPSV failed: 550" in str(failed.value)


def test_active_falls_back_to_port_when_the_server_refuses_eprt(
    make_vsftpd: Callable[..., PeerServer],
) -> None:
    peer = make_vsftpd(extra_config={"cmds_denied": "EPRT"})
    _, used = run(list_workdir(peer_client(peer, mode="active")))
    assert used == "PORT"


def test_a_private_pasv_address_is_replaced_by_the_servers_own(
    make_vsftpd: Callable[..., PeerServer], caplog: pytest.LogCaptureFixture
) -> None:
    peer = make_vsftpd(
        extra_config={
            "cmds_denied": "EPSV",
            "pasv_address": PRIVATE_ELSEWHERE,
            "pasv_addr_resolve": "NO",
        }
    )
    with caplog.at_level(logging.DEBUG, logger="ketch.client"):
        _, used = run(list_workdir(peer_client(peer, mode="passive")))
    assert used == "PASV"
    replies = [r.getMessage() for r in caplog.records if r.getMessage().startswith("< 227")]
    assert replies and all("198,18,0,5" in reply for reply in replies)
    fixups = [r.getMessage() for r in caplog.records if "--trust-pasv-address" in r.getMessage()]
    assert fixups, "the fix-up must be reported at debug level"
    assert f"PASV advertises {PRIVATE_ELSEWHERE}" in fixups[0]
    assert "connecting to 127.0.0.1:" in fixups[0]


def test_a_pasv_address_in_shared_address_space_is_replaced_by_the_servers_own(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    # 100.64.0.0/10 (RFC 6598, carrier-grade NAT) is not private to Python 3.11's
    # ipaddress, but no more reachable across the internet than 10.0.0.0/8.
    # (masquerade_address spares loopback clients; a map entry does not.)
    server = make_server(masquerade_map={"127.0.0.0/8": SHARED_ADDRESS_SPACE})
    (server.home / "here.txt").write_bytes(b"x")
    client = Client(
        server.host,
        server.port,
        user=USER,
        password=PASSWORD,
        mode="passive",
        passive_command="PASV",
        data_connect_timeout=2,
    )

    async def scenario() -> list[str]:
        async with client as ftp:
            return [entry.name for entry in await ftp.list()]

    with caplog.at_level(logging.DEBUG, logger="ketch.client"):
        assert "here.txt" in run(scenario())
    fixups = [r.getMessage() for r in caplog.records if "--trust-pasv-address" in r.getMessage()]
    assert fixups and f"PASV advertises {SHARED_ADDRESS_SPACE}" in fixups[0]
    assert "connecting to 127.0.0.1:" in fixups[0]


def test_auto_mode_uses_passive_and_remembers_it(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server()
    memory = ModeMemory()

    async def scenario() -> list[str]:
        async with Client(
            server.host, server.port, user=USER, password=PASSWORD, mode_memory=memory
        ) as ftp:
            modes = []
            for name in ("a.txt", "b.txt"):
                modes.append((await ftp.upload([b"a"], name)).mode)
            return modes

    assert memory.get((server.host, server.port)) is None
    assert run(scenario()) == ["EPSV", "EPSV"]
    # The memory a mirror's sessions share now knows passive works with this server.
    assert memory.get((server.host, server.port)) == "passive"


def test_when_both_modes_fail_the_hint_follows_each_failures_cause(
    make_server: Callable[..., RunningServer],
) -> None:
    # Passive fails because the one passive port is taken (a passing state), active
    # because the server cannot bind its source port (a setting): no firewall is to blame.
    with socket.create_server(("127.0.0.1", 0)) as taken_source_port:
        source_port = taken_source_port.getsockname()[1]
        server = make_server(passive_ports="21500-21500", active_source_port=source_port)
        holder = ftplib.FTP(timeout=10)
        holder.connect(server.host, server.port)
        holder.login(USER, PASSWORD)
        assert holder.sendcmd("PASV").startswith("227 ")  # holds the only passive port

        async def scenario(mode: str) -> None:
            async with Client(
                server.host,
                server.port,
                user=USER,
                password=PASSWORD,
                mode=mode,  # type: ignore[arg-type]
            ) as ftp:
                await ftp.list()

        try:
            with pytest.raises(DataConnectionFailed) as failed:
                run(scenario("auto"))
            with pytest.raises(DataConnectionFailed) as active_failed:
                run(scenario("active"))
        finally:
            holder.close()
    error = failed.value
    assert "passive ports (21500-21500) are busy" in error.what, error
    assert f"cannot use source port {source_port}" in error.what, error
    assert "firewall" not in error.hint, error
    assert "try again later, or ask its admin to widen passive_ports" in error.hint, error
    assert "its admin should change active_source_port" in error.hint, error
    # Active mode alone says the same, and that passive mode is the way round it.
    assert active_failed.value.hint == (
        "the server cannot use its active source port: its admin should change "
        "active_source_port; or use passive mode (--passive)"
    )


def test_active_mode_accepts_only_the_servers_connection(
    make_server: Callable[..., RunningServer],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """A stranger that races to the client's listening port is turned away."""
    server = make_server()
    (server.home / "wanted.txt").write_bytes(b"only from the server\n")
    intruders: list[socket.socket] = []

    class Intruder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith("> EPRT |1|127.0.0.1|") and not intruders:
                port = int(message.split("|")[3])
                sock = socket.socket()
                sock.settimeout(2)
                sock.bind(("127.0.0.2", 0))
                sock.connect(("127.0.0.1", port))
                sock.sendall(b"not the file\n")
                intruders.append(sock)

    handler = Intruder()
    transcript = logging.getLogger("ketch.client.transcript")
    transcript.addHandler(handler)
    transcript.setLevel(logging.DEBUG)
    destination = tmp_path / "wanted.txt"

    async def scenario() -> str:
        async with Client(
            server.host, server.port, user=USER, password=PASSWORD, mode="active"
        ) as ftp:
            return (await ftp.download("wanted.txt", destination)).mode

    try:
        with caplog.at_level(logging.WARNING, logger="ketch.client"):
            assert run(scenario()) == "EPRT"
    finally:
        transcript.removeHandler(handler)
        transcript.setLevel(logging.NOTSET)
        for sock in intruders:
            sock.close()
    assert intruders, "the intruder never connected; the test proved nothing"
    assert destination.read_bytes() == b"only from the server\n"
    refusals = [
        r.getMessage() for r in caplog.records if "refused a data connection" in r.getMessage()
    ]
    assert refusals and "from 127.0.0.2:" in refusals[0]


def forward_one_connection(listener: socket.socket, target: tuple[str, int]) -> None:
    """A TCP proxy for one connection: what a load balancer in front of a server does."""
    client, _ = listener.accept()
    upstream = socket.create_connection(target, timeout=30)

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join(30)
    client.close()
    upstream.close()


def test_active_mode_through_a_proxy_says_where_the_refused_connection_came_from(
    make_server: Callable[..., RunningServer],
) -> None:
    # The control connection goes to 127.0.0.3 (the proxy); the server connects back
    # from 127.0.0.1, which the client refuses (RFC 2577): it must say so, not blame
    # a firewall for a timeout.
    server = make_server()
    listener = socket.create_server(("127.0.0.3", 0))
    listener.settimeout(30)
    proxy = threading.Thread(
        target=forward_one_connection, args=(listener, (server.host, server.port)), daemon=True
    )
    proxy.start()

    async def scenario() -> None:
        async with Client(
            "127.0.0.3",
            listener.getsockname()[1],
            user=USER,
            password=PASSWORD,
            mode="active",
            data_connect_timeout=2,
            timeout=20,
        ) as ftp:
            await ftp.list()

    try:
        with pytest.raises(DataConnectionFailed) as failure:
            run(scenario())
    finally:
        listener.close()
        proxy.join(30)
    message = str(failure.value)
    assert "came from 127.0.0.1, not from 127.0.0.3" in message, message
    assert "passive" in message and "firewall" not in message


def test_active_ports_and_address_are_what_the_client_advertises(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server()
    ports = range(23500, 23510)

    async def scenario() -> str:
        async with Client(
            server.host,
            server.port,
            user=USER,
            password=PASSWORD,
            mode="active",
            active_ports=ports,
            active_address="127.0.0.1",
            active_command="PORT",
        ) as ftp:
            return (await ftp.upload([b"p"], "p.txt")).mode

    with caplog.at_level(logging.DEBUG, logger="ketch.client.transcript"):
        assert run(scenario()) == "PORT"
    port_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("> PORT ")]
    assert len(port_lines) == 1
    numbers = [int(part) for part in port_lines[0][len("> PORT ") :].split(",")]
    assert numbers[:4] == [127, 0, 0, 1]
    assert numbers[4] * 256 + numbers[5] in ports


def test_one_active_port_serves_transfer_after_transfer(
    make_server: Callable[..., RunningServer],
) -> None:
    # After an upload the client closes the data connection first, so its port is in
    # TIME_WAIT: the next listener on it must still bind (SO_REUSEADDR).
    server = make_server()

    async def scenario() -> bytes:
        async with Client(
            server.host,
            server.port,
            user=USER,
            password=PASSWORD,
            mode="active",
            active_ports=range(23520, 23521),
        ) as ftp:
            for number in range(3):
                await ftp.upload([b"upload %d" % number], f"u{number}.txt")
            received = io.BytesIO()
            await ftp.download("u2.txt", received)
            return received.getvalue()

    assert run(scenario()) == b"upload 2"
    assert (server.home / "u0.txt").read_bytes() == b"upload 0"


@pytest.mark.parametrize(("mode", "expected"), [("passive", "EPSV"), ("active", "EPRT")])
def test_ipv6_uses_the_extended_commands(
    make_server: Callable[..., RunningServer], mode: str, expected: str, tmp_path: Path
) -> None:
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6 support")
    try:
        server = make_server(listen_address="::1")
    except OSError as error:
        pytest.skip(f"cannot listen on ::1 here: {error}")
    (server.home / "six.txt").write_bytes(b"over IPv6\n")

    async def scenario() -> tuple[str, str]:
        async with Client(
            "::1",
            server.port,
            user=USER,
            password=PASSWORD,
            mode=mode,  # type: ignore[arg-type]
        ) as ftp:
            down = await ftp.download("six.txt", tmp_path / "six.txt")
            up = await ftp.upload([b"back"], "back.txt")
            return down.mode, up.mode

    assert run(scenario()) == (expected, expected)
    assert (tmp_path / "six.txt").read_bytes() == b"over IPv6\n"
    assert (server.home / "back.txt").read_bytes() == b"back"


def test_active_mode_over_an_ipv4_mapped_address_names_the_ipv4_address(
    make_server: Callable[..., RunningServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A connection to ::ffff:127.0.0.1 is IPv4 on the wire: EPRT |2| with the mapped
    # address got 522 "use (1)", and the client gave up on active mode.
    try:
        server = make_server(listen_address="::")
    except OSError as error:
        pytest.skip(f"cannot listen on :: here: {error}")
    (server.home / "four.txt").write_bytes(b"mapped\n")

    async def scenario() -> str:
        async with Client(
            "::ffff:127.0.0.1", server.port, user=USER, password=PASSWORD, mode="active"
        ) as ftp:
            return (await ftp.download("four.txt", tmp_path / "four.txt")).mode

    with caplog.at_level(logging.DEBUG, logger="ketch.client"):
        assert run(scenario()) == "EPRT"
    assert (tmp_path / "four.txt").read_bytes() == b"mapped\n"
    sent = [r.getMessage() for r in caplog.records if r.getMessage().startswith("> EPRT")]
    assert len(sent) == 1 and sent[0].startswith("> EPRT |1|127.0.0.1|"), sent


def test_a_failed_epsv_connection_falls_back_to_pasv_for_the_session(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    # Behind a TCP forwarder the control peer (127.0.0.3) is not where the passive
    # ports are: EPSV's port there is refused, PASV's address (127.0.0.1) works.
    server = make_server()
    (server.home / "a.txt").write_bytes(b"through PASV\n")
    listener = socket.create_server(("127.0.0.3", 0))
    listener.settimeout(30)
    proxy = threading.Thread(
        target=forward_one_connection, args=(listener, (server.host, server.port)), daemon=True
    )
    proxy.start()

    async def scenario() -> tuple[str, str]:
        async with Client(
            "127.0.0.3",
            listener.getsockname()[1],
            user=USER,
            password=PASSWORD,
            mode="passive",
            trust_pasv_address=True,
            data_connect_timeout=5,
            timeout=20,
        ) as ftp:
            first = await ftp.download("a.txt", io.BytesIO())
            second = await ftp.download("a.txt", io.BytesIO())
            return first.mode, second.mode

    try:
        with caplog.at_level(logging.DEBUG, logger="ketch.client"):
            assert run(scenario()) == ("PASV", "PASV")
    finally:
        listener.close()
        proxy.join(30)
    sent = [r.getMessage() for r in caplog.records if r.name == "ketch.client.transcript"]
    assert [line for line in sent if line.startswith("> EPSV")] == ["> EPSV"], sent
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("EPSV" in m and "PASV" in m for m in infos), infos


def test_when_pasv_names_the_host_that_refused_epsv_it_is_not_tried_but_named(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server()
    listener = socket.create_server(("127.0.0.3", 0))
    listener.settimeout(30)
    proxy = threading.Thread(
        target=forward_one_connection, args=(listener, (server.host, server.port)), daemon=True
    )
    proxy.start()

    async def scenario() -> None:
        async with Client(
            "127.0.0.3",
            listener.getsockname()[1],
            user=USER,
            password=PASSWORD,
            mode="passive",  # PASV's 127.0.0.1 is fixed up to the peer: refused too
            data_connect_timeout=5,
            timeout=20,
        ) as ftp:
            await ftp.list()

    try:
        with pytest.raises(DataConnectionFailed) as failure:
            run(scenario())
    finally:
        listener.close()
        proxy.join(30)
    # PASV's 127.0.0.1 is taken for the peer's (127.0.0.3), which just refused EPSV's
    # port: not tried again, but the address PASV gave is named as the way out.
    message = str(failure.value)
    assert "passive data connection to 127.0.0.3:" in message and "refused" in message, message
    assert failure.value.mode == "EPSV"
    assert "127.0.0.1 (the address PASV gave)" in failure.value.hint, message
    assert "--no-epsv --trust-pasv-address" in failure.value.hint, message
