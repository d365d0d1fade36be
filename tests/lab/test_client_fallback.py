"""Client fallbacks that need a path the network breaks, in namespaces of the test's own.

Each test builds a namespace holding a ketch server and runs the ``ketch``
command inside it, with nftables dropping what a NAT or firewall would drop:
a private address nobody answers for, or a server's passive port range.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from netns import NetNamespace

SERVER_IP = "198.18.0.1"
UNREACHABLE_PRIVATE_IP = "198.18.0.5"  # advertised by the server, dropped by the firewall
PORT = 2121
PASSIVE = "21000-21009"
PASSWORD = "s3cret"
URL = f"ftp://alice:{PASSWORD}@{SERVER_IP}:{PORT}/"


def start_server(ns: NetNamespace, tmp_path: Path, *extra: str, listen: str = SERVER_IP) -> Path:
    root = tmp_path / "served"
    root.mkdir()
    (root / "one.txt").write_bytes(b"one\n")
    (root / "two.txt").write_bytes(b"two\n")
    ns.start(
        [
            sys.executable,
            "-m",
            "ketch",
            "serve",
            "--root",
            str(root),
            "--listen",
            listen,
            "--port",
            str(PORT),
            "--user",
            f"alice:{PASSWORD}",
            "--write",
            "--passive-ports",
            PASSIVE,
            *extra,
        ],
        tmp_path / "server.log",
    )
    ns.wait_for_port(listen, PORT)
    return root


def ketch(ns: NetNamespace, *args: str) -> tuple[int, str, str]:
    result = ns.run([sys.executable, "-m", "ketch", *args], timeout=60)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture
def nat_like_server(make_netns: Callable[[str], NetNamespace], tmp_path: Path) -> NetNamespace:
    """A server that advertises a private address which nothing answers."""
    ns = make_netns("pasv")
    ns.add_address(f"{SERVER_IP}/32")
    ns.add_address(f"{UNREACHABLE_PRIVATE_IP}/32")
    ns.nft(
        f"table inet lab {{ chain out {{ type filter hook output priority 0; "
        f"ip daddr {UNREACHABLE_PRIVATE_IP} drop; }}; }}"
    )
    start_server(ns, tmp_path, "--masquerade-address", UNREACHABLE_PRIVATE_IP)
    return ns


def test_trusting_an_unreachable_pasv_address_fails_with_the_cause_and_the_fix(
    nat_like_server: NetNamespace,
) -> None:
    code, out, err = ketch(
        nat_like_server,
        "ls",
        "--passive",
        "--no-epsv",
        "--trust-pasv-address",
        "--data-timeout",
        "2",
        URL,
    )
    lines = err.strip().splitlines()
    assert code == 6, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"ketch: passive data connection to {UNREACHABLE_PRIVATE_IP}:210")
    assert lines[0].endswith(
        " timed out: the server advertises a private address — try --active, "
        "or the server's admin should set masquerade_address"
    )
    assert out == ""


def test_the_pasv_fix_up_reaches_the_same_server(nat_like_server: NetNamespace) -> None:
    code, out, err = ketch(
        nat_like_server,
        "ls",
        "--passive",
        "--no-epsv",
        "--names",
        "--data-timeout",
        "2",
        "-v",
        URL,
    )
    assert code == 0, err
    assert out.split() == ["one.txt", "two.txt"]
    assert f"PASV advertises {UNREACHABLE_PRIVATE_IP}" in err
    assert f"connecting to {SERVER_IP}:210" in err


@pytest.fixture
def passive_blocked(make_netns: Callable[[str], NetNamespace], tmp_path: Path) -> NetNamespace:
    """A server whose passive port range a firewall drops."""
    ns = make_netns("blocked")
    ns.add_address(f"{SERVER_IP}/32")
    low, high = PASSIVE.split("-")
    ns.nft(
        f"table inet lab {{ chain in {{ type filter hook input priority 0; "
        f"tcp dport {low}-{high} drop; }}; }}"
    )
    start_server(ns, tmp_path)
    return ns


def test_auto_mode_ends_in_active_when_passive_is_blocked_and_says_so(
    passive_blocked: NetNamespace,
) -> None:
    code, out, err = ketch(passive_blocked, "ls", "--names", "-v", "--data-timeout", "2", URL)
    assert code == 0, err
    assert out.split() == ["one.txt", "two.txt"]
    assert f"passive mode failed: passive data connection to {SERVER_IP}:210" in err
    assert "trying active mode" in err
    assert "> EPRT |1|" in err
    assert "active mode works with" in err


def test_passive_only_fails_with_a_hint_to_try_active(passive_blocked: NetNamespace) -> None:
    code, _, err = ketch(passive_blocked, "ls", "--passive", "--data-timeout", "2", URL)
    assert code == 6
    assert err.startswith(f"ketch: passive data connection to {SERVER_IP}:210")
    assert "try --active" in err


def test_the_working_mode_is_remembered_for_the_rest_of_the_session(
    passive_blocked: NetNamespace,
) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, logging
        from ketch.client import Client
        sent = []
        class Keep(logging.Handler):
            def emit(self, record):
                sent.append(record.getMessage())
        log = logging.getLogger("ketch.client.transcript")
        log.addHandler(Keep()); log.setLevel(logging.DEBUG)
        async def main():
            async with Client({SERVER_IP!r}, {PORT}, user="alice", password={PASSWORD!r},
                              data_connect_timeout=2) as ftp:
                modes = [(await ftp.upload([b"x"], f"f{{i}}.txt")).mode for i in range(3)]
            print(modes, sum(line == "> EPSV" for line in sent))
        asyncio.run(main())
        """
    )
    result = passive_blocked.run([sys.executable, "-c", script], timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['EPRT', 'EPRT', 'EPRT'] 1"
