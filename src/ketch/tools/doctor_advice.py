"""``ketch doctor``'s verdict and fixes, from the judged modes: plain words, no I/O.

The verdict says what works, what does not and why, in the order a person
asks: can I transfer at all, which mode should I use, is it NAT or a
firewall, did something rewrite the conversation. Fixes are concrete and
split between the client's user and the server's admin.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ketch.client.data_modes import is_unroutable
from ketch.client.errors import ConnectFailed, FtpError, LoginFailed
from ketch.protocol.addresses import plain_ip
from ketch.tools.doctor_facts import (
    ACTIVE_MODES,
    MODES,
    PASSIVE_MODES,
    Attempt,
    ModeName,
    ModeResult,
    Observations,
    Problem,
    is_global,
    reply_code,
    verb_of,
)

__all__ = ["Advice", "advise", "advise_after_failure"]


@dataclass(frozen=True)
class Advice:
    verdict: str
    client_fixes: list[str]
    server_fixes: list[str]


def advise(
    observations: Observations,
    modes: dict[ModeName, ModeResult],
    behind_nat: bool | None,
    rewritten: list[ModeName],
) -> Advice:
    """The verdict and fixes for judged attempts."""
    facts = _Facts(observations, modes, behind_nat, rewritten)
    return Advice(facts.verdict(), facts.client_fixes(), facts.server_fixes())


def advise_after_failure(observations: Observations, error: FtpError) -> Advice:
    """When no mode could be tried: resolving, connecting or logging in failed."""
    client, server = _fatal_fixes(error, observations)
    return Advice(f"No data connection could be tried: {error.what}.", client, server)


@dataclass(frozen=True)
class _Facts:
    """The judged attempts, with the questions the verdict and fixes ask of them."""

    observations: Observations
    modes: dict[ModeName, ModeResult]
    behind_nat: bool | None
    rewritten: list[ModeName]  # modes whose set-up exchange was rewritten on the way

    def works(self, names: tuple[ModeName, ...]) -> list[ModeName]:
        return [name for name in names if name in self.modes and self.modes[name].works]

    def failed(self, names: tuple[ModeName, ...]) -> list[ModeName]:
        """Modes tried that failed (not those that cannot apply, as PASV over IPv6)."""
        return [
            name
            for name in names
            if name in self.modes and not self.modes[name].works and not self.skipped(name)
        ]

    def skipped(self, name: ModeName) -> bool:
        attempt = self.attempt(name)
        return attempt is not None and bool(attempt.skipped)

    def problems(self, names: tuple[ModeName, ...]) -> set[Problem | None]:
        return {self.modes[name].problem for name in self.failed(names)}

    def attempt(self, name: ModeName) -> Attempt | None:
        return next((a for a in self.observations.attempts if a.mode == name), None)

    @property
    def server_ip(self) -> str:
        return self.observations.server_ip or self.observations.host

    @property
    def pasv_advertised(self) -> str | None:
        """The address the PASV probes' 227 named."""
        for name in ("PASV", "PASV-fixup"):
            attempt = self.attempt(name)
            if attempt is not None and attempt.advertised is not None:
                return attempt.advertised.host
        return None

    @property
    def fixed_up_by_ketch(self) -> bool:
        """Whether ketch's client connects where the PASV-fixup probe did: it replaces
        only an unroutable PASV address (as FileZilla does), never a public one."""
        advertised = self.pasv_advertised
        if advertised is None or plain_ip(advertised) == plain_ip(self.server_ip):
            return True
        return is_unroutable(advertised)

    def passive_for_ketch(self) -> list[ModeName]:
        """The passive modes that work and that ketch's client can use."""
        return [
            name
            for name in self.works(PASSIVE_MODES)
            if name != "PASV-fixup" or self.fixed_up_by_ketch
        ]

    @property
    def passive_range(self) -> str:
        facts = self.observations.natinfo
        if facts is None or facts.passive_ports is None:
            return "the server's passive_ports range"
        low, high = facts.passive_ports
        return f"the server's passive_ports range ({low}-{high})"

    # -- verdict --

    def verdict(self) -> str:
        passive, active = self.works(PASSIVE_MODES), self.works(ACTIVE_MODES)
        parts: list[str] = []
        skipped = [name for name in MODES if self.skipped(name)]
        if passive and active and not self.failed(MODES) and skipped:
            parts.append(
                f"Every data-connection mode that applies works ({', '.join(passive + active)}); "
                "PASV and PORT cannot describe IPv6 addresses."
            )
        elif passive and active and not self.failed(MODES):
            parts.append(
                "Every data-connection mode works: EPSV, PASV, PASV with fix-up, EPRT and PORT."
            )
        elif passive and active:
            failing = ", ".join(self.failed(MODES))
            parts.append(
                f"Passive and active mode both work ({', '.join(passive + active)}); "
                f"{failing} failed."
            )
        elif passive:
            parts.append(
                f"Passive mode works ({', '.join(passive)}); active mode fails "
                f"{self._why_active()}. {self._how_passive()}"
            )
        elif active:
            parts.append(
                f"Active mode works ({', '.join(active)}); passive mode fails "
                f"{self._why_passive()}. Use active mode (--active) until the server's admin "
                "fixes passive mode."
            )
        elif self._listing_refused():
            listing = self.observations.attempts[0].transfer_reply
            parts.append(
                f"No listing came through because the server refused LIST itself ({listing}): "
                "run ketch doctor on a directory this account may list."
            )
        else:
            parts.append(
                f"No data connection can be made: passive mode fails {self._why_passive()}, "
                f"and active mode fails {self._why_active()}."
            )
        if passive:
            parts.extend(self._passive_notes())
        if self.rewritten:
            what = sorted(
                {
                    f"{verb_of(name)} replies" if name in PASSIVE_MODES else f"{name} commands"
                    for name in self.rewritten
                }
            )
            parts.append(
                f"{' and '.join(what)} were rewritten on the way by something between you and "
                "the server (a NAT router's FTP helper or a firewall's FTP ALG); each rewrite is "
                "listed."
            )
            if active and self.behind_nat:
                parts.append("That rewriting is what lets active mode work through your NAT.")
        if self.observations.natinfo is None:
            answer = self.observations.natinfo_reply
            parts.append(
                f"This server does not offer SITE NATINFO ({answer or 'only ketch does'}), so "
                "the address it sees and what it received cannot be checked; this diagnosis "
                "rests on what the client saw."
            )
        elif self.behind_nat and active:
            behind = self._behind_nat()
            parts.append(f"{behind[0].upper()}{behind[1:]}.")
        return " ".join(parts)

    def _how_passive(self) -> str:
        """Which passive options work: ketch's default tries EPSV, then PASV (to the server's
        own address) only when EPSV is refused outright."""
        passive = self.works(PASSIVE_MODES)
        if passive == ["PASV-fixup"] and not self.fixed_up_by_ketch:
            return (
                "But ketch's client cannot use passive mode here: it replaces only private "
                f"PASV addresses, and {self.pasv_advertised} is public. curl connects to the "
                "server's own address by default (lftp: set ftp:ignore-pasv-address yes); "
                "or wait until the server's admin corrects the address PASV advertises."
            )
        epsv_refused = "EPSV" in self.modes and self.modes["EPSV"].problem == "refused-by-server"
        if "EPSV" in passive or ("PASV-fixup" in passive and epsv_refused):
            return "Use passive mode (the default)."
        if "PASV-fixup" in passive:
            return "Use passive mode with PASV: --no-epsv."
        return (
            "Use passive mode with PASV, connecting to the address its reply names "
            "(something between forwards only that): --no-epsv --trust-pasv-address."
        )

    def _behind_nat(self) -> str:
        facts = self.observations.natinfo
        seen = facts.client_address if facts else "?"
        mine = self.observations.client_address
        return f"you are behind NAT (your address {mine}, the server sees {seen})"

    def _why_active(self) -> str:
        problems = self.problems(ACTIVE_MODES)
        if "server-setup" in problems:
            return (
                "because the server cannot open its side of the connection (it answered "
                + "; ".join(self._replies_of(ACTIVE_MODES, "server-setup"))
                + ")"
            )
        if self.behind_nat:
            return f"because {self._behind_nat()}"
        guess = ""
        if self.behind_nat is None and self._probably_behind_nat():
            mine = self.observations.client_address
            guess = f" (your address {mine} is private, so you are probably behind NAT)"
        if "timeout" in problems:
            return (
                "because the server's connections to you time out: a firewall in front of this "
                "client drops them" + (guess or self._nat_unknown())
            )
        if "refused-by-server" in problems:
            refusals = [
                self.modes[name].detail
                for name in self.failed(ACTIVE_MODES)
                if self.modes[name].problem == "refused-by-server"
            ]
            return "because the server refuses it (" + "; ".join(refusals) + ")" + guess
        if "refused" in problems:
            return "because connections to this client are refused: a firewall here rejects them"
        if "unreachable" in problems:
            return "because the server cannot reach this client's address" + guess
        if "rewritten" in problems:
            return "after a middlebox rewrote the PORT/EPRT command"
        return "(see each mode's detail)"

    def _nat_unknown(self) -> str:
        if self.behind_nat is None:
            return " (or a NAT: this server cannot tell what address it sees)"
        return ""

    def _probably_behind_nat(self) -> bool:
        """Without NATINFO: a private address of ours talking to a public server."""
        mine, server = self.observations.client_address, self.observations.server_ip
        return bool(mine and server) and not is_global(mine or "") and is_global(server or "")

    def _why_passive(self) -> str:
        problems = self.problems(PASSIVE_MODES)
        if "rewritten" in problems:
            return "because a middlebox rewrote the server's passive reply"
        if problems <= {"private-address", "refused-by-server"} and "private-address" in problems:
            pasv = self.attempt("PASV")
            advertised = pasv.advertised if pasv else None
            shown = advertised.host if advertised else "a private address"
            return f"because the server advertises {shown}, a private address you cannot reach"
        if "outside-range" in problems:
            return f"because the server advertises ports outside {self.passive_range}"
        if "timeout" in problems:
            return (
                "because connections to the server's passive ports time out: a firewall in front "
                "of the server drops them"
            )
        if "refused" in problems:
            return "because nothing listens on the advertised port (connection refused)"
        if "unreachable" in problems:
            return "because the advertised address cannot be reached (no route)"
        if problems == {"refused-by-server"}:
            return "because the server refuses EPSV and PASV"
        if "busy" in problems:
            return (
                "because the server has no passive port free just now (it answered "
                + "; ".join(self._replies_of(PASSIVE_MODES, "busy"))
                + ")"
            )
        return "(see each mode's detail)"

    def _pasv_address_fix(self) -> str | None:
        """When PASV fails only because this LAN client is told the public address.

        PASV-fixup reached the same passive ports at the address this client connected
        to, so the firewall is open. The 227 named the masquerade address in effect for
        this client (NATINFO says which), a global one, while the server sees the client
        at a private address: a client inside the NAT, which does not loop connections to
        its public address back in.
        """
        facts = self.observations.natinfo
        pasv = self.attempt("PASV")
        advertised = pasv.advertised if pasv else None
        if (
            facts is None
            or advertised is None
            or advertised.host != facts.masquerade_address
            or advertised.host == self.server_ip
            or is_global(self.server_ip)  # reached across the internet: _stale_masquerade_fix
            or not is_global(advertised.host)
            or is_global(facts.client_address or "")
            or self.modes["PASV"].problem not in ("timeout", "refused", "unreachable")
            or "PASV-fixup" not in self.works(PASSIVE_MODES)
        ):
            return None
        network = _client_network(facts.client_address)
        return (
            f"PASV tells this client to connect to {advertised.host}, but it reaches the "
            f"server at {self.server_ip}, and the passive ports answer there: the "
            "masquerade address suits clients outside the NAT, not this one inside it. Add "
            f'[masquerade_map] "{network}" = "{self.server_ip}" (adjust the network; change '
            "the entry if one names it already): a map entry wins over masquerade_address "
            "and tls_masquerade_address for the clients it names."
        )

    def _stale_masquerade_fix(self) -> str | None:
        """When PASV names a public address other than the public one the client reached
        the server at, and the passive ports answer there: the advertised one is stale."""
        advertised = self.pasv_advertised
        pasv = self.modes.get("PASV")
        if (
            advertised is None
            or pasv is None
            or pasv.problem not in ("timeout", "refused", "unreachable")
            or "PASV-fixup" not in self.works(PASSIVE_MODES)
            or plain_ip(advertised) == plain_ip(self.server_ip)
            or not is_global(advertised)
            or not is_global(self.server_ip)
        ):
            return None
        through = " and ".join(
            name if name == "EPSV" else f"PASV to {self.server_ip}"
            for name in self.works(("EPSV", "PASV-fixup"))
        )
        reached = (
            f"this client reaches the server at {self.server_ip}, and its passive ports are "
            f"open there ({through} got through)"
        )
        fix = f'Set masquerade_address = "{self.server_ip}"'
        facts = self.observations.natinfo
        if facts is None:
            return (
                f"PASV advertises {advertised}, but {reached}: {advertised} is probably an "
                f"out-of-date masquerade address. {fix} (or what this server calls it)."
            )
        if facts.masquerade_address is None:
            return (
                f"PASV advertises {advertised}, the server's own address, but {reached}. {fix} "
                "so PASV advertises that address."
            )
        return (
            f"PASV advertises {advertised}, but {reached}: {advertised} is an out-of-date "
            f"masquerade address. {fix} (or correct the [masquerade_map] entry for "
            f"{_client_network(facts.client_address)} if one names {advertised}); a host "
            "name there, with masquerade_refresh, follows a changing public address."
        )

    def _advertised_address_fix(self) -> str:
        """What makes PASV advertise an address this client reaches (it names a private one).

        masquerade_address is told to every client outside the map: never a private or
        loopback address this client happens to reach the server at.
        """
        facts = self.observations.natinfo
        if facts is not None and facts.masquerade_address == self.pasv_advertised:
            return self._configured_address_fix()
        if _site_local(self.server_ip):
            advertised = self.pasv_advertised or "an address"
            return f"PASV advertises {advertised}, which this client cannot reach. {self._map_it()}"
        return (
            f'Set masquerade_address = "{self.server_ip}" (the address clients reach the '
            "server at) so PASV advertises it; for clients on other networks use "
            "[masquerade_map]."
        )

    def _configured_address_fix(self) -> str:
        """When the address PASV names is the masquerade address configured for this client."""
        advertised = self.pasv_advertised
        seen = self._seen_client()
        configured = (
            f"PASV advertises {advertised}, the masquerade address set for this client, and "
            "this client cannot reach it"
        )
        if _is_loopback(seen):
            # ketch tells loopback clients the local address unless a map entry names them.
            return (
                f"{configured}. A loopback client gets one only from a [masquerade_map] entry "
                f"whose network holds {seen}: remove that entry (loopback clients are then "
                "told the local address) or correct it."
            )
        if _site_local(self.server_ip):
            return (
                f"{configured}: correct it where it is set (masquerade_address, or the "
                f"[masquerade_map] entry for this client's network). {self._map_it()}"
            )
        return (
            f'{configured}: correct it where it is set: masquerade_address = "{self.server_ip}" '
            "(the address clients reach the server at), or the [masquerade_map] entry for "
            f"this client's network if one names {advertised}."
        )

    def _map_it(self) -> str:
        """Advice for a server reached at a private or loopback address: a map entry."""
        entry = f'[masquerade_map] "{_client_network(self._seen_client())}" = "{self.server_ip}"'
        kind = "a loopback" if _is_loopback(self.server_ip) else "a private"
        return (
            f"This client reaches the server at {self.server_ip}, {kind} address, so give "
            f"its network {entry}; masquerade_address is what clients on the internet are "
            "told, and must be the server's public address."
        )

    def _seen_client(self) -> str:
        """This client's address as the server sees it (NATINFO), else as it is here."""
        facts = self.observations.natinfo
        seen = facts.client_address if facts is not None else None
        return seen or self.observations.client_address or ""

    def _replies_of(self, names: tuple[ModeName, ...], problem: Problem) -> list[str]:
        """What the server answered in the failed modes that had ``problem``, once each:
        to the data-setup command, or (an active mode the server could not connect for)
        to LIST."""
        replies = []
        for name in self.failed(names):
            attempt = self.attempt(name)
            if attempt is None or self.modes[name].problem != problem:
                continue
            reply = attempt.transfer_reply if name in ACTIVE_MODES else attempt.reply
            if reply and reply not in replies:
                replies.append(reply)
        return replies

    def _passive_notes(self) -> list[str]:
        notes = []
        if "PASV-fixup" in self.works(PASSIVE_MODES) and "PASV" in self.failed(PASSIVE_MODES):
            problem = self.modes["PASV"].problem
            who = (
                "as ketch, curl and FileZilla do by default"
                if self.fixed_up_by_ketch
                else "as curl does by default (ketch's client and FileZilla replace only "
                f"private addresses, and {self.pasv_advertised} is public)"
            )
            notes.append(
                f"Plain PASV fails ({problem}); it works only when the client connects to the "
                f"server's own address instead of the one in the 227 reply, {who}."
            )
        if (
            "EPSV" in self.failed(PASSIVE_MODES)
            and self.modes["EPSV"].problem == "refused-by-server"
        ):
            notes.append("The server refuses EPSV; PASV is what passive mode uses here.")
        return notes

    def _listing_refused(self) -> bool:
        replies = [a.transfer_reply for a in self.observations.attempts]
        return bool(replies) and all((reply_code(r) or 0) >= 500 for r in replies)

    # -- fixes --

    def client_fixes(self) -> list[str]:
        passive, active = self.works(PASSIVE_MODES), self.works(ACTIVE_MODES)
        fixes: list[str] = []
        if self.passive_for_ketch() and self.failed(ACTIVE_MODES):
            fixes.append(
                "Use passive mode: ketch's default (--passive forces it); in other clients turn "
                "passive mode on (lftp: set ftp:passive-mode on; curl uses it by default)."
            )
        if (
            "PASV-fixup" in passive
            and "PASV" in self.failed(PASSIVE_MODES)
            and "EPSV" not in passive
        ):
            fixes.append(self._connect_to_server_fix())
        if "EPSV" in passive and {"PASV", "PASV-fixup"} <= set(self.failed(PASSIVE_MODES)):
            fixes.append(
                "Use EPSV: ketch's default (--epsv pins it); clients that only send PASV will fail."
            )
        if passive == ["PASV"]:
            fixes.append(
                "Send PASV and connect where its reply says: --no-epsv --trust-pasv-address "
                "(curl: --disable-epsv --no-ftp-skip-pasv-ip; lftp: set ftp:prefer-epsv no)."
            )
        if active and not self.passive_for_ketch():
            fixes.append("Use active mode: --active (curl: -P -; lftp: set ftp:passive-mode off).")
        if self.failed(ACTIVE_MODES):
            problems = self.problems(ACTIVE_MODES)
            if "server-setup" in problems:
                pass  # the server's own source port: nothing to do on this side
            elif self.behind_nat:
                fixes.append(
                    "For active mode behind NAT, forward a port range on your router to this "
                    "host and run with --active-ports LOW-HIGH --active-address <your public "
                    "address>."
                )
            elif problems & {"timeout", "refused", "unreachable"}:
                fixes.append(
                    f"For active mode, allow inbound TCP connections from {self.server_ip} in "
                    "this host's firewall, to ports you choose with --active-ports LOW-HIGH."
                )
        if not passive and not active and self.problems(PASSIVE_MODES) & {"timeout", "refused"}:
            fixes.append(
                f"Check that this side lets outbound connections to {self.server_ip} on the "
                "server's passive ports through (a corporate firewall may allow port 21 only)."
            )
        return fixes

    def _connect_to_server_fix(self) -> str:
        """How clients connect to the server's own address instead of the PASV one."""
        if self.fixed_up_by_ketch:
            return (
                "Keep connecting to the server's own address when PASV names another: ketch's "
                "default (do not pass --trust-pasv-address); curl: --ftp-skip-pasv-ip; lftp: "
                "set ftp:ignore-pasv-address yes."
            )
        return (
            f"Connect to the server's own address instead of {self.pasv_advertised}, which "
            "PASV names: curl does by default (--ftp-skip-pasv-ip); lftp: set "
            "ftp:ignore-pasv-address yes. ketch's client replaces only private PASV "
            "addresses, so it cannot do this with a public one."
        )

    def server_fixes(self) -> list[str]:
        fixes: list[str] = []
        problems = self.problems(PASSIVE_MODES)
        address_fix = self._pasv_address_fix() or self._stale_masquerade_fix()
        if address_fix is not None:
            # The passive ports are reachable (PASV-fixup got through): no firewall advice.
            fixes.append(address_fix)
            problems = self.problems(("EPSV",))
        if "private-address" in problems or (
            "rewritten" in problems and not self.works(PASSIVE_MODES)
        ):
            fixes.append(self._advertised_address_fix())
        if "rewritten" in problems:
            fixes.append(
                "A device in front of the server rewrites passive replies (FTP ALG or conntrack "
                "helper) and gets them wrong: turn that off and set masquerade_address instead."
            )
        if problems & {"timeout", "refused", "unreachable"} or "outside-range" in problems:
            fixes.append(
                f"Open {self.passive_range} for inbound TCP in the server's firewall, and "
                "forward it one-to-one (same port numbers) on a NAT router in front of it: "
                "`ketch firewall --format nftables` prints the rules."
            )
        if "busy" in problems:
            fixes.append(
                f"Widen {self.passive_range}: each session waiting for a data connection holds "
                "one of its ports, so a range smaller than the sessions at once runs out "
                "(or lower max_connections to fit it)."
            )
        if "EPSV" in self.modes and self.modes["EPSV"].problem == "refused-by-server":
            fixes.append(
                "Allow EPSV (RFC 2428): it carries no address, so it works through NAT without "
                "masquerade_address."
            )
        if "server-setup" in self.problems(ACTIVE_MODES):
            fixes.append(
                "Active mode fails on the server's side: it may not bind the source port "
                'active_source_port names. Set active_source_port = "auto" (control port - 1 '
                'when it may, else an ephemeral port) or "ephemeral"; port 20 needs the server '
                "started as root."
            )
        facts = self.observations.natinfo
        if facts is not None and not self.behind_nat and "timeout" in self.problems(ACTIVE_MODES):
            source = facts.active_source_port or "20"
            ports = "ephemeral ports" if source == "ephemeral" else f"port {source}"
            fixes.append(
                "If the server's firewall limits outgoing connections, allow new ones from "
                f"{ports} (active_source_port) for active mode: "
                "`ketch firewall --format nftables` shows the output rules."
            )
        return fixes


# Addresses only one host or site reaches, so masquerade_address (told to every client
# outside the map) must not be one. 198.18.0.0/15 and the documentation ranges are not:
# labs and examples use them for public addresses.
_SITE_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


def _site_local(address: str) -> bool:
    """Loopback, link-local, RFC 1918, RFC 6598 (carrier-grade NAT) or unique-local."""
    try:
        ip = ipaddress.ip_address(plain_ip(address))
    except ValueError:
        return False
    return ip.is_loopback or ip.is_link_local or any(ip in net for net in _SITE_NETWORKS)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(plain_ip(address)).is_loopback
    except ValueError:
        return False


def _client_network(address: str | None) -> str:
    """The /24 (IPv4) or /64 (IPv6) around ``address``, to show in a masquerade_map example."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return "CLIENT-NETWORK"
    return str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False))


def _fatal_fixes(error: FtpError, observations: Observations) -> tuple[list[str], list[str]]:
    client = [error.hint[:1].upper() + error.hint[1:] + "."] if error.hint else []
    server: list[str] = []
    if observations.fatal_step == "connect" and isinstance(error, ConnectFailed):
        server.append(
            f"Make sure the server listens on port {observations.server_port} and that its "
            "firewall lets the control connection in: `ketch firewall --format nftables` prints "
            "the rules."
        )
    elif isinstance(error, LoginFailed):
        client.append("Give the right user and password in the URL, with -u, or in ~/.netrc.")
    return client, server
