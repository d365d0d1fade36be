"""The server's settings as validated, immutable pydantic models.

Each key's allowed values are written once, in ``ketch.config_rules.RULES``, so
that a validator and the error message a person sees cannot disagree. Loading files and
turning pydantic's reports into plain lines is ``ketch.config``'s job.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import argon2
from argon2.exceptions import InvalidHashError
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ketch.config_rules import (
    RULES,
    ends_in_a_number,
    existing_directory,
    expand_home,
    is_hostname,
    permission_words,
    reject_empty_path,
)
from ketch.protocol.addresses import plain_network
from ketch.server.auth import ANONYMOUS_NAMES

__all__ = [
    "AnonymousConfig",
    "PortRange",
    "ServerConfig",
    "UserConfig",
    "user_name_problem",
]


class PortRange(NamedTuple):
    """An inclusive range of TCP ports, written "LOW-HIGH" in the configuration."""

    low: int
    high: int

    @property
    def size(self) -> int:
        """How many ports the range holds."""
        return self.high - self.low + 1

    def __contains__(self, port: object) -> bool:
        # A range, not a pair: 50500 is "in" 50000-50999.
        return isinstance(port, int) and self.low <= port <= self.high

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


# -- masquerade_map entries ----------------------------------------------------


def _config_error(key: str, value: object, message: str) -> PydanticCustomError:
    """A problem that names its own key and value (a table's entry, or several keys)."""
    return PydanticCustomError(
        "ketch_config", "{message}", {"message": message, "key": key, "value": value}
    )


def _map_network(text: str, key: str) -> ipaddress.IPv4Network:
    """A masquerade_map key: an IPv4 network (PASV, which the map serves, is IPv4 only)."""
    if text in ServerConfig.model_fields:
        # TOML puts every key after a [table] header into that table.
        raise _config_error(
            key, text, f"{text!r} is a top-level key: move it above the [masquerade_map] header"
        )
    try:
        network = plain_network(text.strip())  # clients are compared unmapped
    except ValueError:
        raise _config_error(key, text, "is not an IP network; " + RULES["masquerade_map"]) from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise _config_error(
            key,
            text,
            "is an IPv6 network, but only PASV uses the map and PASV is IPv4 only "
            "(EPSV carries no address); use IPv4 networks",
        )
    return network


def user_name_problem(name: str) -> str | None:
    """What is wrong with an account's name (the text after the key), or None."""
    if not name:
        return "is empty; " + RULES["users.name"]
    if any(char.isspace() or not char.isprintable() for char in name):
        return "contains spaces or control characters; " + RULES["users.name"]
    if name.lower() in ANONYMOUS_NAMES:
        return (
            "is reserved for anonymous login (configured under [anonymous]); pick another user name"
        )
    return None


def _map_address(address: str, key: str) -> str:
    """A masquerade_map value: an IPv4 address or a host name (resolved at start-up)."""
    address = address.strip()
    try:
        return _advertised_address(address, RULES["masquerade_map"])
    except ValueError as error:
        raise _config_error(key, address, str(error)) from None


def _advertised_address(address: str, rule: str) -> str:
    """An address for PASV to advertise: an IPv4 address (normalized) or a host name.

    ValueError says what is wrong, ``rule`` when it is neither an address nor a name.
    """
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        if is_hostname(address):
            return address
        if ends_in_a_number(address):
            raise ValueError(
                "is not a valid IPv4 address (a name ending in a number is read as a "
                "shortened one: '10.1' means 10.0.0.1); write all four numbers, such as "
                "'203.0.113.5', or a host name such as 'ftp.example.com'"
            ) from None
        raise ValueError(rule) from None
    if parsed.version != 4:
        raise ValueError("is an IPv6 address, but PASV can only advertise IPv4; use IPv4")
    return str(parsed)


# -- the models ----------------------------------------------------------------


#: A home directory: a non-empty path to a directory that exists.
HomeDirectory = Annotated[
    Path, BeforeValidator(reject_empty_path), AfterValidator(existing_directory)
]
#: Permission words, checked against the ones the server knows.
PermissionWords = Annotated[list[str], AfterValidator(permission_words)]


class UserConfig(BaseModel):
    """One virtual user: a name, an argon2 password hash and a home directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    password_hash: str
    home: HomeDirectory
    permissions: PermissionWords = Field(default_factory=lambda: ["list", "read"])
    quota_bytes: int = Field(default=0, ge=0, strict=True)
    quota_files: int = Field(default=0, ge=0, strict=True)
    download_rate: int = Field(default=0, ge=0, strict=True)
    upload_rate: int = Field(default=0, ge=0, strict=True)
    max_sessions: int | None = Field(default=None, ge=0, strict=True)

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if problem := user_name_problem(name):
            raise ValueError(problem)
        return name

    @field_validator("password_hash")
    @classmethod
    def _check_hash(cls, password_hash: str) -> str:
        if not password_hash.startswith("$argon2"):
            raise ValueError(RULES["users.password_hash"])
        try:
            argon2.extract_parameters(password_hash)
        except InvalidHashError:
            raise ValueError(
                "is not a complete argon2 hash (was it cut short?); "
                "create a new one with `ketch user hash`"
            ) from None
        return password_hash


class AnonymousConfig(BaseModel):
    """Anonymous login ("anonymous" or "ftp" with any password)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: None (left out): on only while no accounts are configured; see
    #: ServerConfig.anonymous_enabled, which everything that decides must ask.
    enabled: bool | None = Field(default=None, strict=True)
    home: HomeDirectory | None = None
    permissions: PermissionWords = Field(default_factory=lambda: ["list", "read"])
    download_rate: int = Field(default=0, ge=0, strict=True)
    upload_rate: int = Field(default=0, ge=0, strict=True)
    max_sessions: int = Field(default=0, ge=0, strict=True)


class ServerConfig(BaseModel):
    """Everything one server instance needs to know; immutable once validated."""

    # Numbers and booleans are strict: TOML values are typed already, and
    # lax coercion would accept `port = true` or `enabled = "no"` (as true).
    model_config = ConfigDict(frozen=True, extra="forbid")

    listen_address: str | None = None
    port: int = Field(default=2121, ge=0, le=65535, strict=True)
    root: Path = Field(default=Path("."), validate_default=True)
    banner: str = "ketch FTP server ready."
    #: Names HOST (RFC 7151) accepts, compared without case; empty accepts any.
    host_names: list[str] = Field(default_factory=list)
    passive_ports: PortRange = PortRange(50000, 50999)
    masquerade_address: str | None = None
    #: Advertised to sessions whose control connection is TLS, when that differs.
    tls_masquerade_address: str | None = None
    #: Seconds between look-ups of a masquerade host name (dynamic DNS).
    masquerade_refresh: float = Field(default=300.0, gt=0, strict=True, allow_inf_nan=False)
    #: Client network (IPv4 CIDR) -> advertised address; the longest prefix wins.
    masquerade_map: dict[str, str] = Field(default_factory=dict)
    active_source_port: Literal["auto", "ephemeral"] | int = "auto"
    allow_foreign_addresses: bool = Field(default=False, strict=True)
    max_connections: int = Field(default=512, ge=1, strict=True)
    max_connections_per_ip: int = Field(default=20, ge=1, strict=True)
    idle_timeout: float = Field(default=300.0, gt=0, strict=True, allow_inf_nan=False)
    data_connect_timeout: float = Field(default=30.0, gt=0, strict=True, allow_inf_nan=False)
    data_stall_timeout: float = Field(default=120.0, gt=0, strict=True, allow_inf_nan=False)
    atomic_uploads: bool = Field(default=True, strict=True)
    max_upload_size: int = Field(default=0, ge=0, strict=True)
    #: Reuse the names of big directories unchanged (by ctime) since they were last listed.
    listing_cache: bool = Field(default=True, strict=True)
    #: Seconds a verified password is remembered, so logging in again skips argon2 (0: never).
    login_cache_seconds: float = Field(default=600.0, ge=0, strict=True, allow_inf_nan=False)
    login_failure_delay: float = Field(default=1.0, ge=0, strict=True, allow_inf_nan=False)
    login_failure_delay_max: float = Field(default=8.0, ge=0, strict=True, allow_inf_nan=False)
    ban_after_failures: int = Field(default=10, ge=0, strict=True)
    ban_window: float = Field(default=600.0, gt=0, strict=True, allow_inf_nan=False)
    ban_duration: float = Field(default=900.0, gt=0, strict=True, allow_inf_nan=False)
    ban_exempt: list[str] = Field(default_factory=list)
    max_sessions_per_user: int = Field(default=16, ge=0, strict=True)
    command_rate: float = Field(default=50.0, ge=0, strict=True, allow_inf_nan=False)
    command_burst: int = Field(default=200, ge=1, strict=True)
    command_flood_timeout: float = Field(default=30.0, gt=0, strict=True, allow_inf_nan=False)
    line_timeout: float = Field(default=30.0, gt=0, strict=True, allow_inf_nan=False)
    max_line_length: int = Field(default=4096, ge=512, le=65536, strict=True)
    anonymous: AnonymousConfig = Field(default_factory=AnonymousConfig)
    users: list[UserConfig] = Field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: The user to become after binding the ports, when started as root.
    run_as: str | None = None
    #: Seconds running transfers may go on after SIGTERM before they are cut off.
    shutdown_grace: float = Field(default=30.0, ge=0, strict=True, allow_inf_nan=False)
    #: Server processes sharing the control port; each gets a slice of passive_ports.
    workers: int = Field(default=1, ge=1, le=64, strict=True)
    #: "auto": uvloop when it is installed, else asyncio's own loop.
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    #: FTPS (RFC 4217): the certificate (PEM, with its chain) and its key (None: in the same file).
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    #: "control": USER/PASS only after AUTH TLS; "all": data connections need PROT P too.
    tls_required: Literal["off", "control", "all"] = "off"
    #: A protected data connection must resume a TLS session of this server (vsftpd's default).
    tls_require_session_reuse: bool = Field(default=True, strict=True)
    #: A second port where TLS starts with the first byte (implicit FTPS, ftps://).
    implicit_tls_port: int | None = Field(default=None, ge=0, le=65535, strict=True)

    def anonymous_enabled(self) -> bool:
        """Whether anonymous logins are allowed: as [anonymous] enabled says, or, left
        out, only while there are no accounts (the quick start serves a directory to all;
        a server with accounts is no public one unless it says so)."""
        enabled = self.anonymous.enabled
        return not self.users if enabled is None else enabled

    def anonymous_home(self) -> Path:
        """Where anonymous users land: their own home if set, else the served root."""
        return self.anonymous.home if self.anonymous.home is not None else self.root

    def resolved_listen_address(self) -> str:
        """The address to bind: the configured one, or every address the system has.

        "::" covers IPv4 as well when the listener clears IPV6_V6ONLY.
        """
        if self.listen_address is not None:
            return self.listen_address
        return "::" if _ipv6_available() else "0.0.0.0"

    @field_validator("listen_address")
    @classmethod
    def _check_listen_address(cls, address: str | None) -> str | None:
        if address is None:
            return None
        try:
            parsed = ipaddress.ip_address(address.strip())
        except ValueError:
            raise ValueError(RULES["listen_address"]) from None
        mapped = getattr(parsed, "ipv4_mapped", None)
        if mapped is not None:
            # The listener's IPv6 socket is IPv6-only: binding it fails with EINVAL.
            raise ValueError(
                f"is an IPv4-mapped IPv6 address, which cannot be listened on; "
                f"give the IPv4 address itself: '{mapped}'"
            )
        return str(parsed)

    @field_validator("root", mode="before")
    @classmethod
    def _check_root_text(cls, root: Any) -> Any:
        return reject_empty_path(root)

    @field_validator("root")
    @classmethod
    def _check_root(cls, root: Path) -> Path:
        return existing_directory(root)

    @field_validator("banner", mode="before")
    @classmethod
    def _check_banner(cls, banner: Any) -> Any:
        if not isinstance(banner, str):
            return banner  # pydantic reports the type
        banner = banner.replace("\r\n", "\n")
        # A CR or other control character would corrupt the 220 reply framing.
        if any(unicodedata.category(char) == "Cc" and char != "\n" for char in banner):
            raise ValueError(RULES["banner"])
        return banner

    @field_validator("passive_ports", mode="before")
    @classmethod
    def _check_passive_ports(cls, value: Any) -> PortRange:
        low = high = None
        if isinstance(value, str):
            match = re.fullmatch(r"\s*([0-9]{1,5})\s*-\s*([0-9]{1,5})\s*", value)
            if match:
                low, high = int(match[1]), int(match[2])
        elif (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(isinstance(port, int) and not isinstance(port, bool) for port in value)
        ):
            low, high = value
        if low is None or high is None or not 1 <= low <= high <= 65535:
            raise ValueError(RULES["passive_ports"])
        return PortRange(low, high)

    @field_validator("masquerade_address", "tls_masquerade_address")
    @classmethod
    def _check_masquerade(cls, address: str | None, info: ValidationInfo) -> str | None:
        if address is None:
            return None
        return _advertised_address(address.strip(), RULES[str(info.field_name)])

    @field_validator("masquerade_map")
    @classmethod
    def _check_masquerade_map(cls, entries: dict[str, str]) -> dict[str, str]:
        checked: dict[str, str] = {}
        for network_text, address in entries.items():
            key = f'masquerade_map."{network_text}"'
            network = _map_network(network_text, key)
            if str(network) in checked:
                raise _config_error(
                    key,
                    network_text,
                    f"is the same network as {network}, listed before it; keep one of them",
                )
            checked[str(network)] = _map_address(address, key)
        return checked

    @field_validator("host_names")
    @classmethod
    def _check_host_names(cls, names: list[str]) -> list[str]:
        checked = []
        for name in names:
            text = name.strip().removeprefix("[").removesuffix("]").lower()
            try:
                text = str(ipaddress.ip_address(text))
            except ValueError:
                if not is_hostname(text):
                    message = f"{name!r} is not a host name; {RULES['host_names']}"
                    raise ValueError(message) from None
            checked.append(text.removesuffix("."))
        return checked

    @field_validator("ban_exempt")
    @classmethod
    def _check_ban_exempt(cls, networks: list[str]) -> list[str]:
        checked = []
        for network in networks:
            try:
                # Clients arrive unmapped (plain_ip), so a mapped network would match none.
                checked.append(str(plain_network(network.strip())))
            except ValueError:
                raise ValueError(
                    f"{network!r} is not an IP network; {RULES['ban_exempt']}"
                ) from None
        return checked

    @field_validator("active_source_port", mode="before")
    @classmethod
    def _check_active_source_port(cls, value: Any) -> Any:
        # Checked here in one go so a bad value gets one clear message rather
        # than a report from each branch of the union.
        if isinstance(value, str) and value.lower() in ("auto", "ephemeral"):
            return value.lower()
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
            return value
        raise ValueError(RULES["active_source_port"])

    @field_validator("users")
    @classmethod
    def _check_unique_names(cls, users: list[UserConfig]) -> list[UserConfig]:
        first_index: dict[str, int] = {}
        for index, user in enumerate(users):
            if user.name in first_index:
                raise _config_error(
                    f"users[{index}].name",
                    user.name,
                    f"duplicate user name (also users[{first_index[user.name]}]); "
                    "give every user a different name",
                )
            first_index[user.name] = index
        return users

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, level: Any) -> Any:
        return level.lower() if isinstance(level, str) else level

    @field_validator("workers")
    @classmethod
    def _check_workers(cls, workers: int, info: ValidationInfo) -> int:
        if workers == 1:
            return workers
        ports: PortRange | None = info.data.get("passive_ports")
        if ports is not None and ports.size < workers:
            raise ValueError(
                f"each worker needs passive ports of its own, but passive_ports {ports} "
                f"has {ports.size}; widen the range or use fewer workers"
            )
        users: list[UserConfig] = info.data.get("users") or []
        quota_users = [user.name for user in users if user.quota_bytes or user.quota_files]
        if quota_users:
            raise ValueError(
                "quotas are counted inside one server process, so they need workers = 1 "
                f"(users with a quota: {', '.join(quota_users)})"
            )
        return workers

    @field_validator("tls_certificate", "tls_key", mode="before")
    @classmethod
    def _check_tls_path(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError(f"is empty; {RULES[str(info.field_name)]}")
        if isinstance(value, str | Path):  # a Path from a command-line flag, too
            return expand_home(Path(value))
        return value

    @model_validator(mode="after")
    def _check_active_source_port_is_free(self) -> ServerConfig:
        """A control port is always listened on: every active connection would fail to
        bind it. (One inside passive_ports fails only sometimes: a start-up warning.)"""
        source = self.active_source_port
        if isinstance(source, int) and source in (self.port, self.implicit_tls_port):
            raise _config_error(
                "active_source_port",
                source,
                f"port {source} is a control port the server listens on (port or "
                "implicit_tls_port), so active connections could not be made from it; "
                'use "auto" (port - 1) or another port',
            )
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> ServerConfig:
        """The TLS settings together: a usable certificate whenever FTPS is asked for."""
        from ketch.server.tls import settings_problem

        problem = settings_problem(self)
        if problem is not None:
            key, value, message = problem
            raise _config_error(key, value, message)
        return self

    @field_validator("run_as")
    @classmethod
    def _check_run_as(cls, name: str | None) -> str | None:
        # Whether the user exists is checked at start-up, on the machine that serves.
        if name is not None and (
            not name or any(char.isspace() or not char.isprintable() for char in name)
        ):
            raise ValueError(RULES["run_as"])
        return name


@functools.cache
def _ipv6_available() -> bool:
    """Whether this host can actually listen on IPv6 (the build flag is not enough)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::", 0))
    except OSError:
        return False
    return True
