"""What PASV advertises to whom: map by longest prefix, loopback, TLS variant, name refresh."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path
from typing import Any

import pytest

from ketch.config import ConfigError, load_config
from ketch.protocol.addresses import is_ip_literal
from ketch.server.masquerade import (
    AdvertisedAddress,
    MapEntry,
    MasqueradePolicy,
    PrivateAdvertisementWarnings,
    longest_prefix_match,
    private_advertisement_warning,
    resolve_ipv4,
)

from fake_clock import FakeClock

LOCAL = "10.9.9.9"


class Resolver:
    """A DNS stand-in: answers ``answer``, or fails with OSError when it is None."""

    def __init__(self, answer: str) -> None:
        self.answer: str | None = answer
        self.delay = 0.0
        self.calls = 0

    async def __call__(self, name: str) -> str:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.answer is None:
            raise OSError(f"{name}: Name or service not known")
        return self.answer


def policy(
    resolver: Resolver | None = None, clock: FakeClock | None = None, **settings: Any
) -> MasqueradePolicy:
    """A policy for ``settings``; host names resolve through ``resolver`` (no real DNS)."""
    resolver = resolver or Resolver("203.0.113.99")
    config = load_config(None, settings)
    return MasqueradePolicy(
        masquerade=_address("masquerade_address", config.masquerade_address, resolver, clock),
        tls_masquerade=_address(
            "tls_masquerade_address", config.tls_masquerade_address, resolver, clock
        ),
        entries=[
            _entry(network, value, resolver, clock)
            for network, value in config.masquerade_map.items()
        ],
    )


def _address(
    setting: str, value: str | None, resolver: Resolver, clock: FakeClock | None
) -> AdvertisedAddress | None:
    if value is None:
        return None
    ip = value if is_ip_literal(value) else "203.0.113.99"
    return AdvertisedAddress(
        setting, value, ip, refresh=300, resolver=resolver, clock=clock or FakeClock()
    )


def _entry(network: str, value: str, resolver: Resolver, clock: FakeClock | None) -> MapEntry:
    address = _address(f"masquerade_map[{network}]", value, resolver, clock)
    assert address is not None
    return MapEntry(ipaddress.IPv4Network(network), address)


def advertised(chosen: MasqueradePolicy, client: str, *, tls: bool = False) -> str:
    return asyncio.run(chosen.advertised(client, LOCAL, tls=tls))


# -- the choice ------------------------------------------------------------------


def test_without_settings_pasv_advertises_the_local_address() -> None:
    assert advertised(policy(), "198.51.100.7") == LOCAL


def test_masquerade_address_goes_to_remote_clients_but_not_loopback_ones() -> None:
    chosen = policy(masquerade_address="203.0.113.5")
    assert advertised(chosen, "198.51.100.7") == "203.0.113.5"
    assert advertised(chosen, "192.168.1.20") == "203.0.113.5"
    assert advertised(chosen, "127.0.0.1") == LOCAL


def test_map_picks_the_longest_prefix_holding_the_client() -> None:
    chosen = policy(
        masquerade_address="203.0.113.5",
        masquerade_map={
            "10.0.0.0/8": "10.0.0.1",
            "10.1.0.0/16": "10.1.0.1",
            "10.1.2.0/24": "10.1.2.1",
        },
    )
    assert advertised(chosen, "10.1.2.77") == "10.1.2.1"
    assert advertised(chosen, "10.1.9.77") == "10.1.0.1"
    assert advertised(chosen, "10.200.0.1") == "10.0.0.1"
    assert advertised(chosen, "198.51.100.7") == "203.0.113.5"


def test_map_entry_applies_to_a_loopback_client_it_names() -> None:
    chosen = policy(masquerade_map={"127.0.0.2/32": "198.18.0.9"})
    assert advertised(chosen, "127.0.0.2") == "198.18.0.9"
    assert advertised(chosen, "127.0.0.1") == LOCAL


def test_tls_sessions_get_the_tls_variant_and_plain_ones_do_not() -> None:
    chosen = policy(masquerade_address="203.0.113.5", tls_masquerade_address="203.0.113.6")
    assert advertised(chosen, "198.51.100.7", tls=True) == "203.0.113.6"
    assert advertised(chosen, "198.51.100.7", tls=False) == "203.0.113.5"


def test_tls_session_without_a_tls_variant_gets_masquerade_address() -> None:
    chosen = policy(masquerade_address="203.0.113.5")
    assert advertised(chosen, "198.51.100.7", tls=True) == "203.0.113.5"


def test_map_wins_over_the_tls_variant() -> None:
    chosen = policy(
        tls_masquerade_address="203.0.113.6", masquerade_map={"192.168.0.0/16": "192.168.0.2"}
    )
    assert advertised(chosen, "192.168.4.4", tls=True) == "192.168.0.2"


def test_longest_prefix_match_ignores_text_that_is_no_address() -> None:
    networks = [ipaddress.IPv4Network("0.0.0.0/0")]
    assert longest_prefix_match(networks, "not-an-ip") is None
    assert longest_prefix_match(networks, "192.0.2.1") == networks[0]
    assert longest_prefix_match([], "192.0.2.1") is None


# -- names: start-up resolution and refresh ----------------------------------------


def test_an_ip_literal_resolves_to_itself_without_dns() -> None:
    assert resolve_ipv4("203.0.113.5") == "203.0.113.5"


def test_a_name_that_does_not_resolve_stops_start_up_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"masquerade_map\[x\] 'no-such-host\.invalid'"):
        resolve_ipv4("no-such-host.invalid", "masquerade_map[x]")


def test_from_config_resolves_localhost() -> None:
    config = load_config(None, {"masquerade_address": "localhost"})
    chosen = MasqueradePolicy.from_config(config)
    assert chosen.resolved_names() == {"localhost": "127.0.0.1"}


def test_from_config_looks_names_up_again_after_the_configured_refresh(tmp_path: Path) -> None:
    config_file = tmp_path / "ketch.toml"
    config_file.write_text('masquerade_address = "localhost"\nmasquerade_refresh = 45\n')
    config = load_config(config_file)
    assert config.masquerade_refresh == 45

    async def scenario() -> None:
        resolver, clock = Resolver("203.0.113.2"), FakeClock()
        # Start-up resolves "localhost" for real; later lookups go through ``resolver``.
        chosen = MasqueradePolicy.from_config(config, resolver=resolver, clock=clock)
        assert chosen.resolved_names() == {"localhost": "127.0.0.1"}
        client = "198.51.100.7"
        assert await chosen.advertised(client, LOCAL, tls=False) == "127.0.0.1"
        clock.now += 44
        assert await chosen.advertised(client, LOCAL, tls=False) == "127.0.0.1"
        assert resolver.calls == 0
        clock.now += 1  # 45 s: the configured refresh, far short of the default 300
        assert await chosen.advertised(client, LOCAL, tls=False) == "203.0.113.2"
        assert resolver.calls == 1
        resolver.answer = "203.0.113.3"
        clock.now += 44
        assert await chosen.advertised(client, LOCAL, tls=False) == "203.0.113.2"
        assert resolver.calls == 1
        clock.now += 1
        assert await chosen.advertised(client, LOCAL, tls=False) == "203.0.113.3"
        assert resolver.calls == 2

    asyncio.run(scenario())


def dynamic(resolver: Resolver, clock: FakeClock, refresh: float = 300) -> AdvertisedAddress:
    return AdvertisedAddress(
        "masquerade_address",
        "ftp.example.com",
        "203.0.113.1",
        refresh=refresh,
        resolver=resolver,
        clock=clock,
    )


def test_a_name_is_looked_up_again_only_when_the_refresh_time_has_passed() -> None:
    async def scenario() -> None:
        resolver, clock = Resolver("203.0.113.2"), FakeClock()
        address = dynamic(resolver, clock)
        assert await address.current() == "203.0.113.1"
        clock.now += 299
        assert await address.current() == "203.0.113.1"
        assert resolver.calls == 0
        clock.now += 1
        assert await address.current() == "203.0.113.2"
        assert await address.current() == "203.0.113.2"
        assert resolver.calls == 1

    asyncio.run(scenario())


def test_an_ip_literal_is_never_looked_up() -> None:
    async def scenario() -> None:
        resolver, clock = Resolver("203.0.113.2"), FakeClock()
        address = AdvertisedAddress(
            "masquerade_address",
            "203.0.113.1",
            "203.0.113.1",
            refresh=1,
            resolver=resolver,
            clock=clock,
        )
        clock.now += 1000
        assert await address.current() == "203.0.113.1"
        assert resolver.calls == 0

    asyncio.run(scenario())


def test_a_failed_lookup_keeps_the_last_good_address_and_warns_once_per_streak(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        resolver, clock = Resolver("203.0.113.2"), FakeClock()
        address = dynamic(resolver, clock)
        resolver.answer = None
        for _ in range(3):
            clock.now += 300
            assert await address.current() == "203.0.113.1"
        assert resolver.calls == 3
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        text = warnings[0].getMessage()
        assert "ftp.example.com" in text and "203.0.113.1" in text and "DNS" in text
        # It resolves again: logged, used, and a later failure warns anew.
        resolver.answer = "203.0.113.3"
        clock.now += 300
        assert await address.current() == "203.0.113.3"
        assert any("resolves again" in r.getMessage() for r in caplog.records)
        resolver.answer = None
        clock.now += 300
        await address.current()
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2

    with caplog.at_level(logging.INFO, logger="ketch.server"):
        asyncio.run(scenario())


def test_a_slow_lookup_does_not_hold_pasv_and_lands_for_the_next_one() -> None:
    async def scenario() -> None:
        resolver, clock = Resolver("203.0.113.2"), FakeClock()
        resolver.delay = 0.3
        address = dynamic(resolver, clock)
        clock.now += 300
        # The old address: this PASV did not wait for the 0.3 s lookup to finish.
        assert await address.current(wait=0.05) == "203.0.113.1"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (answer := await address.current(wait=0.05)) != "203.0.113.2":
            assert answer == "203.0.113.1"
            assert loop.time() < deadline, "the background lookup never landed"
            await asyncio.sleep(0.05)
        assert resolver.calls == 1  # the PASVs that came meanwhile did not start another

    asyncio.run(scenario())


def test_a_lookup_answering_garbage_counts_as_failed() -> None:
    async def scenario() -> None:
        resolver, clock = Resolver("not an address"), FakeClock()
        address = dynamic(resolver, clock)
        clock.now += 300
        assert await address.current() == "203.0.113.1"

    asyncio.run(scenario())


# -- the private-address warning ---------------------------------------------------

# Documentation ranges (192.0.2/24, 198.51.100/24, 203.0.113/24) are not
# is_global, so a client "on the internet" needs a real public address here.
PUBLIC_CLIENT = "8.8.4.4"


def test_private_address_advertised_to_a_public_client_is_warned_with_the_fix() -> None:
    warning = private_advertisement_warning("192.168.1.10", PUBLIC_CLIENT)
    assert warning is not None
    assert "192.168.1.10" in warning and PUBLIC_CLIENT in warning
    assert "masquerade_address" in warning and "masquerade_map" in warning


@pytest.mark.parametrize(
    ("advertised_ip", "client"),
    [
        ("1.1.1.1", PUBLIC_CLIENT),  # public to public
        ("192.168.1.10", "192.168.1.20"),  # private to private: a LAN
        ("198.18.3.2", "198.18.2.1"),  # the lab's networks
        ("127.0.0.1", "127.0.0.1"),
    ],
)
def test_no_warning_unless_a_private_address_goes_to_a_public_client(
    advertised_ip: str, client: str
) -> None:
    assert private_advertisement_warning(advertised_ip, client) is None


def test_the_private_address_warning_comes_once_per_advertised_address() -> None:
    warnings = PrivateAdvertisementWarnings()
    assert warnings.check("192.168.1.10", PUBLIC_CLIENT) is not None
    assert warnings.check("192.168.1.10", "1.1.1.1") is None
    assert warnings.check("192.168.1.11", PUBLIC_CLIENT) is not None
    assert warnings.check("1.1.1.1", PUBLIC_CLIENT) is None


# -- the configuration keys --------------------------------------------------------


def test_map_networks_are_normalised_and_values_checked() -> None:
    entries = {
        " 198.18.3.7/24": "198.18.3.2",
        "10.0.0.0/8": "ftp.example",
        "::ffff:192.168.0.0/112": "192.168.0.1",  # clients are compared unmapped
    }
    config = load_config(None, {"masquerade_map": entries})
    assert config.masquerade_map == {
        "198.18.3.0/24": "198.18.3.2",
        "10.0.0.0/8": "ftp.example",
        "192.168.0.0/16": "192.168.0.1",
    }
    assert config.masquerade_refresh == 300


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        ({"nonsense": "1.2.3.4"}, ["not an IP network", '"198.18.3.0/24" = "198.18.3.2"']),
        ({"2001:db8::/32": "1.2.3.4"}, ["IPv6 network", "IPv4 only"]),
        ({"10.0.0.0/8": "2001:db8::1"}, ["IPv6 address", "IPv4"]),
        ({"10.0.0.0/8": "bad host!"}, ["IPv4 address or a host name"]),
        ({"10.0.0.0/8": "10.0.0.1", "10.9.9.9/8": "10.0.0.2"}, ["same network as 10.0.0.0/8"]),
        ({"tls_masquerade_address": "1.2.3.4"}, ["top-level key", "above the [masquerade_map]"]),
    ],
)
def test_bad_map_entries_are_refused_saying_what_to_do(
    entries: dict[str, str], words: list[str]
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(None, {"masquerade_map": entries})
    message = str(refused.value)
    assert "masquerade_map" in message
    for word in words:
        assert word in message


def _masquerade_problem(key: str, value: str) -> str:
    settings: dict[str, Any] = {key: value}
    if key == "masquerade_map":
        settings = {key: {"10.0.0.0/8": value}}
    with pytest.raises(ConfigError) as refused:
        load_config(None, settings)
    return str(refused.value)


@pytest.mark.parametrize("key", ["masquerade_address", "tls_masquerade_address", "masquerade_map"])
@pytest.mark.parametrize("value", ["203.0.113", "10.1", "127.1.", "0x7f000001", "ftp.123"])
def test_a_shortened_ipv4_address_is_refused_not_expanded(key: str, value: str) -> None:
    # getaddrinfo reads "203.0.113" the inet_aton way, as 203.0.0.113: advertised, unnoticed.
    problem = _masquerade_problem(key, value)
    assert problem.startswith(f"command line: {key}"), problem
    assert f"= {value!r}: is not a valid IPv4 address" in problem
    assert "write all four numbers, such as '203.0.113.5'" in problem


@pytest.mark.parametrize("key", ["masquerade_address", "tls_masquerade_address"])
@pytest.mark.parametrize("value", ["::1", "2001:db8::5", "::ffff:203.0.113.5"])
def test_an_ipv6_masquerade_address_is_refused_as_the_map_refuses_it(key: str, value: str) -> None:
    problem = _masquerade_problem(key, value)
    assert problem == (
        f"command line: {key} = {value!r}: is an IPv6 address, but PASV can only advertise "
        "IPv4; use IPv4"
    )


def test_names_ending_in_a_number_are_no_host_names() -> None:
    with pytest.raises(
        ConfigError, match=r"host_names = \['203.0.113'\]: '203.0.113' is not a host"
    ):
        load_config(None, {"host_names": ["203.0.113"]})
    ok = load_config(None, {"masquerade_address": "ftp1.example.com", "host_names": ["a1.b2c"]})
    assert ok.masquerade_address == "ftp1.example.com"


def test_tls_masquerade_address_and_refresh_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"tls_masquerade_address .*host name"):
        load_config(None, {"tls_masquerade_address": "bad host!"})
    with pytest.raises(ConfigError, match=r"masquerade_refresh .*greater than 0"):
        load_config(None, {"masquerade_refresh": 0})
