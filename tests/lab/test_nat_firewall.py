"""Through NAT and firewalls, for real: ketch server, client and tools in a namespace lab.

Each class builds one small network (see ``topology``): a client behind a
masquerading router, behind a firewall that drops inbound connections, a
server behind a firewall written by ``ketch firewall``, a server behind NAT
with port forwards, and the kernel's FTP helper rewriting PORT/EPRT. The
client is the ``ketch`` command run inside the client's namespace, so what
is asserted is what a user sees: the listing, the one-line error, the exit
code, and ``ketch doctor``'s findings.

Servers and clients are run by ``lab_ftp``, with timeouts of a few seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab_ftp import (
    CONTROL_PORT,
    SERVER_DATA_TIMEOUT,
    FtpServer,
    Run,
    assert_lists,
    data_commands,
    doctor,
    error_line,
    firewall_rules,
    ls,
    natinfo,
    reply_with,
    served_root,
    server_settings,
    start_servers,
    write_config,
)
from netns import NetNamespace, unavailable_reason
from topology import (
    Host,
    Lab,
    conntrack_helper_ruleset,
    inbound_filter_ruleset,
    masquerade_ruleset,
    port_forward_ruleset,
)

# The client's LAN, the "internet" and the server's LAN (see topology).
CLIENT_IP = "198.18.1.10"
CLIENT_ROUTER_LAN_IP = "198.18.1.1"
CLIENT_ROUTER_PUBLIC_IP = "198.18.2.1"
SERVER_IP = "198.18.2.2"  # a server directly on the internet
OUTSIDE_CLIENT_IP = "198.18.2.10"  # a client directly on the internet
SERVER_ROUTER_PUBLIC_IP = "198.18.2.3"
SERVER_ROUTER_LAN_IP = "198.18.3.1"
PRIVATE_SERVER_IP = "198.18.3.2"
INSIDE_CLIENT_IP = "198.18.3.10"


# -- the lab -----------------------------------------------------------------


@pytest.fixture(scope="class")
def lab() -> Iterator[Lab]:
    """A lab shared by the tests of one class (one network build per scenario)."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") and os.geteuid() == 0:
            pytest.fail(reason)
        pytest.skip(reason)
    with ExitStack() as stack:
        yield Lab(lambda label: stack.enter_context(NetNamespace(label)))


def assert_says_active_is_blocked(message: str) -> None:
    """The client's one line when the server cannot connect back: the cause and the fix.

    The server replies 150 before it connects, so today the client reports
    its own timeout ("did not connect back ... within 3 s") rather than the
    server's 425 ("could not connect back"); either tells the user what to do.
    """
    assert message.startswith("ketch: active mode: the server "), message
    assert f"connect back to {OUTSIDE_CLIENT_IP}:" in message, message
    assert "firewall" in message, message
    assert message.endswith("use passive mode (--passive)"), message


# -- topologies ----------------------------------------------------------------


@dataclass
class ClientAndServer:
    client: Host
    server_host: Host
    servers: list[FtpServer]
    inside: Host | None = None  # a second client, in the server's LAN


def client_behind_nat_router(lab: Lab, directory: Path, helper: bool) -> ClientAndServer:
    """client 198.18.1.10 -- masquerading router 198.18.2.1 -- server 198.18.2.2."""
    client, router, server = lab.host("client"), lab.router("crouter"), lab.host("server")
    lab.wire(client, f"{CLIENT_IP}/24", router, f"{CLIENT_ROUTER_LAN_IP}/24")
    outside, _ = lab.wire(router, f"{CLIENT_ROUTER_PUBLIC_IP}/24", server, f"{SERVER_IP}/24")
    client.default_route(CLIENT_ROUTER_LAN_IP)
    router.nft(masquerade_ruleset(outside))
    if helper:
        router.nft(conntrack_helper_ruleset(CONTROL_PORT))
    servers = start_servers(server, SERVER_IP, directory, server_settings(served_root(directory)))
    return ClientAndServer(client, server, servers)


def client_next_to_server(lab: Lab, client_ruleset: str | None) -> tuple[Host, Host]:
    """client 198.18.2.10 -- server 198.18.2.2 on one link, no NAT."""
    client, server = lab.host("client"), lab.host("server")
    lab.wire(client, f"{OUTSIDE_CLIENT_IP}/24", server, f"{SERVER_IP}/24")
    if client_ruleset:
        client.nft(client_ruleset)
    return client, server


# -- 1. client behind NAT ------------------------------------------------------


class TestClientBehindNat:
    """A masquerading router rewrites the client's address; active mode cannot work."""

    @pytest.fixture(scope="class")
    @classmethod
    def scene(cls, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> ClientAndServer:
        return client_behind_nat_router(lab, tmp_path_factory.mktemp("nat"), helper=False)

    def test_active_mode_is_refused_saying_behind_nat_and_to_use_passive(
        self, scene: ClientAndServer
    ) -> None:
        run = ls(scene.client, scene.servers[0].url(), "--active")
        assert run.code == 6, run.err  # data connection failed
        message = error_line(run)
        assert "behind NAT" in message
        assert "passive" in message
        assert CLIENT_IP in message and CLIENT_ROUTER_PUBLIC_IP in message
        assert run.out == ""

    def test_passive_mode_works(self, scene: ClientAndServer) -> None:
        run = ls(scene.client, scene.servers[0].url(), "--passive")
        assert_lists(run)

    def test_auto_mode_ends_in_passive(self, scene: ClientAndServer) -> None:
        run = ls(scene.client, scene.servers[0].url())
        assert_lists(run)
        assert data_commands(run) == ["EPSV"]

    def test_doctor_names_nat(self, scene: ClientAndServer) -> None:
        report = doctor(scene.client, scene.servers[0].url())
        assert report["exit_code"] == 0, report
        assert report["client_address"] == CLIENT_IP
        assert report["server_sees"] == CLIENT_ROUTER_PUBLIC_IP
        assert report["behind_nat"] is True
        assert "NAT" in report["verdict"]
        modes = report["modes"]
        assert modes["EPSV"]["works"] is True, modes
        assert modes["EPRT"]["works"] is False, modes
        assert modes["PORT"]["works"] is False, modes
        assert modes["EPRT"]["problem"] == modes["PORT"]["problem"] == "refused-by-server", modes
        assert report["rewrites"] == [], report
        assert report["fixes"]["client"], report


# -- 2. client behind a firewall -----------------------------------------------


class TestClientBehindFirewall:
    """The client's firewall drops new inbound connections: no NAT, but no active mode."""

    @pytest.fixture(scope="class")
    @classmethod
    def scene(cls, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> ClientAndServer:
        directory = tmp_path_factory.mktemp("firewall")
        client, server = client_next_to_server(lab, inbound_filter_ruleset())
        settings = server_settings(served_root(directory))
        return ClientAndServer(
            client, server, start_servers(server, SERVER_IP, directory, settings)
        )

    def test_active_mode_fails_saying_a_firewall_blocks_it_and_to_use_passive(
        self, scene: ClientAndServer
    ) -> None:
        run = ls(scene.client, scene.servers[0].url(), "--active")
        assert run.code == 6, run.err
        message = error_line(run)
        assert_says_active_is_blocked(message)

    def test_passive_mode_works(self, scene: ClientAndServer) -> None:
        assert_lists(ls(scene.client, scene.servers[0].url(), "--passive"))

    def test_auto_mode_ends_in_passive(self, scene: ClientAndServer) -> None:
        run = ls(scene.client, scene.servers[0].url())
        assert_lists(run)
        assert data_commands(run) == ["EPSV"]

    def test_doctor_names_a_firewall(self, scene: ClientAndServer) -> None:
        report = doctor(scene.client, scene.servers[0].url())
        assert report["exit_code"] == 0, report
        assert report["behind_nat"] is False, report
        assert "firewall" in report["verdict"], report
        modes = report["modes"]
        assert modes["EPSV"]["works"] is True, modes
        for mode in ("EPRT", "PORT"):
            assert modes[mode]["works"] is False, modes
            assert modes[mode]["problem"] == "timeout", modes


# -- 3. server behind the firewall `ketch firewall` writes ----------------------


def server_behind_generated_firewall(
    lab: Lab, directory: Path, **served: object
) -> ClientAndServer:
    """client 198.18.2.10 -- server 198.18.2.2 behind the rules `ketch firewall` writes.

    The rules are written for the default settings; the server is started with
    those settings and ``served`` on top (a range the firewall does not open).
    """
    client, server = client_next_to_server(lab, None)
    settings = server_settings(served_root(directory), listen_address=SERVER_IP)
    config = write_config(directory / "firewall.toml", settings)
    rules = firewall_rules(config, "--format", "nftables")
    server.nft(rules)
    server.nft(rules)  # loading it again must work: the file is idempotent
    started = start_servers(server, SERVER_IP, directory, {**settings, **served})
    return ClientAndServer(client, server, started)


class TestServerBehindGeneratedFirewall:
    """nftables rules from `ketch firewall` admit the control port and the passive range."""

    @pytest.fixture(scope="class")
    @classmethod
    def scene(cls, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> ClientAndServer:
        return server_behind_generated_firewall(lab, tmp_path_factory.mktemp("server-firewall"))

    def test_passive_and_active_work_through_the_firewall(self, scene: ClientAndServer) -> None:
        url = scene.servers[0].url()
        assert_lists(ls(scene.client, url, "--passive", "--epsv"))
        assert_lists(ls(scene.client, url, "--passive", "--no-epsv"))
        assert_lists(ls(scene.client, url, "--active"))


class TestServerOutsideTheGeneratedFirewallsRange:
    """The firewall written for one passive range, the server moved to another.

    A class (and lab) of its own, so that no other test depends on its server.
    """

    OTHER_PASSIVE_PORTS = "50100-50109"

    @pytest.fixture(scope="class")
    @classmethod
    def scene(cls, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> ClientAndServer:
        directory = tmp_path_factory.mktemp("server-firewall-moved")
        return server_behind_generated_firewall(
            lab, directory, passive_ports=cls.OTHER_PASSIVE_PORTS
        )

    def test_a_passive_range_the_firewall_does_not_open_fails_and_the_log_names_it(
        self, scene: ClientAndServer
    ) -> None:
        [server] = scene.servers
        run = ls(scene.client, server.url(), "--passive")
        assert run.code == 6, run.err
        message = error_line(run)
        assert f"passive data connection to {SERVER_IP}:501" in message, message
        port = message.split(f"{SERVER_IP}:", 1)[1].split(" ", 1)[0]
        logged = server.wait_for_log("no connection arrived")
        assert f"{SERVER_IP}:{port}" in logged, logged
        assert OUTSIDE_CLIENT_IP in logged, logged
        assert f"{SERVER_DATA_TIMEOUT:g}" in logged, logged
        for word in ("firewall", "passive_ports", "masquerade_address"):
            assert word in logged, logged
        assert " WARNING ketch.server.data: " in logged, logged
        facts = natinfo(scene.client, server)
        assert facts["passive-expired"] == "1", facts
        assert facts["passive-ports"] == self.OTHER_PASSIVE_PORTS, facts


# -- 4. server behind NAT with port forwards -----------------------------------


class TestServerBehindNat:
    """The server's router forwards the control ports and the passive range to it.

    It also masquerades what the server sends out, as every NAT router does, so
    the server's active-mode connections reach clients from the public address.

    Three servers on one private host, differing only in what PASV advertises:
    nothing configured, masquerade_address, and masquerade_address with a
    masquerade_map entry for the server's own LAN.
    """

    PLAIN, MASQUERADED, MAPPED = 21, 2121, 2221

    @pytest.fixture(scope="class")
    @classmethod
    def scene(cls, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> ClientAndServer:
        directory = tmp_path_factory.mktemp("server-nat")
        outside, router = lab.host("outside"), lab.router("srouter")
        server, inside = lab.host("server"), lab.host("inside")
        _, public = lab.wire(
            outside, f"{OUTSIDE_CLIENT_IP}/24", router, f"{SERVER_ROUTER_PUBLIC_IP}/24"
        )
        lan = lab.switch(router, f"{SERVER_ROUTER_LAN_IP}/24")
        lab.plug(lan, server, f"{PRIVATE_SERVER_IP}/24")
        lab.plug(lan, inside, f"{INSIDE_CLIENT_IP}/24")
        server.default_route(SERVER_ROUTER_LAN_IP)
        forwarded = [str(cls.PLAIN), str(cls.MASQUERADED), str(cls.MAPPED), "50000-50029"]
        router.nft(port_forward_ruleset(SERVER_ROUTER_PUBLIC_IP, forwarded, PRIVATE_SERVER_IP))
        router.nft(masquerade_ruleset(public))  # the server's own connections (active mode)
        root = served_root(directory)
        servers = start_servers(
            server,
            PRIVATE_SERVER_IP,
            directory,
            server_settings(root, port=cls.PLAIN, passive_ports="50000-50009"),
            server_settings(
                root,
                port=cls.MASQUERADED,
                passive_ports="50010-50019",
                masquerade_address=SERVER_ROUTER_PUBLIC_IP,
            ),
            server_settings(
                root,
                port=cls.MAPPED,
                passive_ports="50020-50029",
                masquerade_address=SERVER_ROUTER_PUBLIC_IP,
                masquerade_map={"198.18.3.0/24": PRIVATE_SERVER_IP},
            ),
        )
        return ClientAndServer(outside, server, servers, inside)

    @staticmethod
    def strict_pasv(client: Host, url: str) -> Run:
        return ls(client, url, "--passive", "--no-epsv", "--trust-pasv-address")

    def public_url(self, port: int) -> str:
        return f"ftp://{SERVER_ROUTER_PUBLIC_IP}:{port}/"

    def test_strict_pasv_fails_without_masquerade_address(self, scene: ClientAndServer) -> None:
        run = self.strict_pasv(scene.client, self.public_url(self.PLAIN))
        assert run.code == 6, run.err
        assert "(198,18,3,2," in reply_with(run, "227")
        assert f"passive data connection to {PRIVATE_SERVER_IP}:" in error_line(run)

    def test_epsv_works_without_masquerade_address(self, scene: ClientAndServer) -> None:
        run = ls(scene.client, self.public_url(self.PLAIN), "--passive", "--epsv")
        assert_lists(run)

    def test_strict_pasv_works_with_masquerade_address(self, scene: ClientAndServer) -> None:
        run = self.strict_pasv(scene.client, self.public_url(self.MASQUERADED))
        assert_lists(run)
        assert "(198,18,2,3," in reply_with(run, "227")

    def test_masquerade_map_gives_inside_clients_the_private_address(
        self, scene: ClientAndServer
    ) -> None:
        assert scene.inside is not None
        run = self.strict_pasv(scene.inside, f"ftp://{PRIVATE_SERVER_IP}:{self.MAPPED}/")
        assert_lists(run)
        assert "(198,18,3,2," in reply_with(run, "227")
        run = self.strict_pasv(scene.client, self.public_url(self.MAPPED))
        assert_lists(run)
        assert "(198,18,2,3," in reply_with(run, "227")

    def test_doctor_tells_the_admin_to_set_masquerade_address(self, scene: ClientAndServer) -> None:
        report = doctor(scene.client, self.public_url(self.PLAIN))
        assert report["exit_code"] == 0, report
        modes = report["modes"]
        assert modes["PASV"]["works"] is False, modes
        assert modes["PASV"]["problem"] == "private-address", modes
        for mode in ("EPSV", "PASV-fixup", "EPRT", "PORT"):
            assert modes[mode]["works"] is True, modes
        advice = " ".join(report["fixes"]["server"])
        assert f'masquerade_address = "{SERVER_ROUTER_PUBLIC_IP}"' in advice, report

    def test_doctor_finds_every_mode_working_with_masquerade_address(
        self, scene: ClientAndServer
    ) -> None:
        report = doctor(scene.client, self.public_url(self.MASQUERADED))
        assert report["exit_code"] == 0, report
        assert report["behind_nat"] is False, report
        assert all(mode["works"] for mode in report["modes"].values()), report
        assert report["rewrites"] == [], report

    def test_without_a_map_inside_clients_are_told_the_public_address(
        self, scene: ClientAndServer
    ) -> None:
        assert scene.inside is not None
        run = self.strict_pasv(scene.inside, f"ftp://{PRIVATE_SERVER_IP}:{self.MASQUERADED}/")
        assert "(198,18,2,3," in reply_with(run, "227")


# -- 5. active mode from port 20 -----------------------------------------------


class TestActiveFromPort20:
    """A client firewall that admits inbound connections only from source port 20."""

    EPHEMERAL_PORT = 2121

    @pytest.fixture(scope="class")
    @classmethod
    def scene(cls, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> ClientAndServer:
        directory = tmp_path_factory.mktemp("port20")
        client, server = client_next_to_server(lab, inbound_filter_ruleset("tcp sport 20"))
        root = served_root(directory)
        servers = start_servers(
            server,
            SERVER_IP,
            directory,
            server_settings(root, active_source_port=20),
            server_settings(
                root,
                port=cls.EPHEMERAL_PORT,
                passive_ports="50010-50019",
                active_source_port="ephemeral",
            ),
        )
        return ClientAndServer(client, server, servers)

    def test_active_mode_from_port_20_passes(self, scene: ClientAndServer) -> None:
        run = ls(scene.client, scene.servers[0].url(), "--active")
        assert_lists(run)
        assert data_commands(run) == ["EPRT"]

    def test_active_mode_from_an_ephemeral_port_is_dropped(self, scene: ClientAndServer) -> None:
        run = ls(scene.client, scene.servers[1].url(), "--active")
        assert run.code == 6, run.err
        message = error_line(run)
        assert_says_active_is_blocked(message)


# -- 6. active mode through NAT with the FTP conntrack helper -------------------


class TestActiveThroughNatWithConntrackHelper:
    """The client's router runs nf_conntrack_ftp/nf_nat_ftp, which rewrite PORT and EPRT."""

    @pytest.fixture(scope="class")
    @classmethod
    def scene(cls, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> ClientAndServer:
        return client_behind_nat_router(lab, tmp_path_factory.mktemp("helper"), helper=True)

    def test_active_mode_works_through_nat(self, scene: ClientAndServer) -> None:
        run = ls(scene.client, scene.servers[0].url(), "--active")
        assert_lists(run)
        # The client sent its private address; the server accepted what the router made of it.
        assert data_commands(run) == ["EPRT"]
        [eprt] = [line for line in run.lines_sent() if line.startswith("EPRT")]
        assert f"|1|{CLIENT_IP}|" in eprt
        assert CLIENT_ROUTER_PUBLIC_IP in reply_with(run, "200 EPRT")

    def test_doctor_reports_the_rewrite(self, scene: ClientAndServer) -> None:
        report = doctor(scene.client, scene.servers[0].url())
        assert report["exit_code"] == 0, report
        assert report["behind_nat"] is True, report
        sent_by_client = f"'EPRT |1|{CLIENT_IP}|"
        received_by_server = f"'EPRT |1|{CLIENT_ROUTER_PUBLIC_IP}|"
        assert any(
            sent_by_client in rewrite and received_by_server in rewrite
            for rewrite in report["rewrites"]
        ), report
        modes = report["modes"]
        assert modes["EPRT"]["works"] is True, modes
        assert modes["PORT"]["works"] is True, modes
        assert "rewrit" in report["verdict"], report
