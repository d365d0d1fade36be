"""PassiveOffer's ends other than the usual one, on real loopback sockets and both loops.

The usual ends (the client connects; nobody connects in time; a stranger
races the client) are covered through the server in tests/integration. Here:
an offer closed while a transfer waits for its connection, and an accept
that fails on the server's side (out of descriptors).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Coroutine
from typing import Any

import pytest

from ketch.config_models import PortRange
from ketch.server.data_channel import DataConnectionError
from ketch.server.data_offers import PassiveOffer
from ketch.server.event_loop import loop_factory
from ketch.server.passive_ports import PassivePortPool, PassivePortsExhausted

LOOPS = ["asyncio", "uvloop"]


def run_on(loop_name: str, main: Coroutine[Any, Any, str]) -> str:
    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        return runner.run(main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_closing_an_offer_ends_a_connect_that_waits(loop_name: str) -> None:
    async def main() -> str:
        pool = PassivePortPool(PortRange(31600, 31600))
        offer = PassiveOffer(
            pool, "127.0.0.1", client_ip="127.0.0.1", mode="PASV", timeout=30, advertised="x"
        )
        waiting = asyncio.ensure_future(offer.connect())
        await asyncio.sleep(0.05)
        offer.close()
        async with asyncio.timeout(5):
            with pytest.raises(DataConnectionError) as withdrawn:
                await waiting
        pool.open_listener("127.0.0.1").close()  # the one port is free again
        return str(withdrawn.value)

    assert "withdrawn" in run_on(loop_name, main())


def test_a_workers_exhausted_slice_is_named_as_its_share_of_the_range() -> None:
    pool = PassivePortPool(PortRange(31620, 31620), configured=PortRange(31620, 31629))
    with pool.open_listener("127.0.0.1"), pytest.raises(PassivePortsExhausted) as exhausted:
        pool.open_listener("127.0.0.1")
    assert str(exhausted.value).startswith(
        "all 1 passive ports (31620-31620) (this process's share of 31620-31629) are busy;"
    )


def test_a_range_holding_only_the_control_port_says_so_not_busy() -> None:
    pool = PassivePortPool(PortRange(31640, 31640))
    pool.exclude(31640, "control port")
    pool.exclude(31641, "implicit FTPS port")  # outside the range: nothing to exclude
    with pytest.raises(PassivePortsExhausted) as exhausted:
        pool.open_listener("127.0.0.1")
    assert str(exhausted.value) == (
        "passive_ports 31640-31640 holds only the server's control port 31640, so no "
        "passive connection can be made; ask the admin to move passive_ports off it"
    )


# For the scripts below, run in a process of their own: no descriptor left below ``limit``.
USE_EVERY_DESCRIPTOR = """
import os, resource

def use_every_descriptor(limit):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    fillers = []
    while True:
        try:
            fillers.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            return fillers
"""

NO_DESCRIPTOR_LEFT = (
    USE_EVERY_DESCRIPTOR
    + """
from ketch.config_models import PortRange
from ketch.server.passive_ports import PassiveListenerFailed, PassivePortPool

pool = PassivePortPool(PortRange(31630, 31639))
use_every_descriptor(64)
try:
    pool.open_listener("127.0.0.1")
except PassiveListenerFailed as error:
    print(error)
"""
)


def test_a_listener_the_system_cannot_make_is_its_own_error_not_a_crash() -> None:
    # Out of descriptors: PASV answers 425 with this text instead of a 451 and a traceback.
    result = subprocess.run(
        [sys.executable, "-c", NO_DESCRIPTOR_LEFT], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.startswith(
        "the server could not open a listening socket (Too many open files); try again"
    ), result.stdout + result.stderr


ACCEPT_FAILS = (
    USE_EVERY_DESCRIPTOR
    + """
import asyncio, errno, os, resource, socket, sys
from ketch.config_models import PortRange
from ketch.server.data_offers import PassiveOffer
from ketch.server.event_loop import loop_factory
from ketch.server.passive_ports import PassivePortPool

async def main():
    pool = PassivePortPool(PortRange(31610, 31610))
    expired = []
    offer = PassiveOffer(pool, "127.0.0.1", client_ip="127.0.0.1", mode="PASV", timeout=2,
                         advertised="x", on_expiry=lambda: expired.append(1))
    client = socket.socket()
    client.setblocking(False)
    client.connect_ex(("127.0.0.1", offer.port))
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers = use_every_descriptor(highest + 1)  # so that accept finds none
    try:
        async with asyncio.timeout(5):
            await offer.connect()
    except OSError as error:
        print("raised", errno.errorcode.get(error.errno), "expired", len(expired))
    offer.close()
    for fd in fillers:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    pool.open_listener("127.0.0.1").close()
    print("port free")

with asyncio.Runner(loop_factory=loop_factory(sys.argv[1])) as runner:
    runner.run(main())
"""
)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_an_accept_that_fails_here_is_raised_not_blamed_on_a_firewall(loop_name: str) -> None:
    """Out of descriptors: the transfer gets the error itself (a 451 naming it), the
    listener is dropped rather than called again and again, and the port comes back."""
    result = subprocess.run(
        [sys.executable, "-c", ACCEPT_FAILS, loop_name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["raised EMFILE expired 0", "port free"]
    assert "passive data connection on port 31610 failed: [Errno 24]" in result.stderr
