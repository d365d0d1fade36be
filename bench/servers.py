"""The four servers under test, started with equivalent settings, and what /proc says of them.

* ketch: ``python -m ketch serve --config`` with a generated TOML file; the
  code it runs is a snapshot of src/ taken when the run starts (PYTHONPATH),
  so that edits made to src/ during a run do not mix two versions.
* pyftpdlib: bench/pyftpdlib_server.py, the default FTPServer (one process,
  asynchronous, no threads).
* floor (only when named, sessions scenario only): bench/floor_server.py, a
  bound rather than a peer: the session's six commands and a sendfile, and
  nothing else, on one asyncio Protocol.
* vsftpd and pure-ftpd: Debian's binaries unpacked under bench/.peers/root by
  scripts/fetch-peer-servers, set up as tests/peer_servers.py does: vsftpd
  serves anonymous logins (no password to check) with a writable ``pub``;
  pure-ftpd serves a virtual user whose argon2id hash is as cheap as ketch's.

Every server listens on 127.0.0.1, takes 2,000 connections (from one address
too), has a passive range of PASSIVE_SIZE ports outside the ephemeral range,
logs no transfers, and runs in a process group of its own.

Each server also has a TLS variant (``Server.use_variant("tls")``) for the
FTPS scenario: explicit FTPS, optional, with one self-signed ECDSA P-256
certificate made per run and given to all four. ketch and pyftpdlib have a
multi-process variant (``"workers"``) for the workers scenario: ketch with
``--workers 2`` (SO_REUSEPORT sockets, a passive-port slice each),
pyftpdlib's pre-fork mode with two processes (one shared listening socket
and passive range). A variant is a restart with other settings, so that the
plain scenarios measure the servers without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import argon2

from ketch.tools.certificates import CertificateFiles, write_certificate

from harness.ports import bindable, ephemeral_ports
from harness.processes import signal_group, stop_group
from harness.procfs import CLOCK_TICKS, cpu_ticks, kernel_ticks, process_tree, pss, rss

BENCH = Path(__file__).resolve().parent
PEERS_ROOT = BENCH / ".peers" / "root"
VSFTPD = PEERS_ROOT / "usr/sbin/vsftpd"
PURE_FTPD = PEERS_ROOT / "usr/sbin/pure-ftpd"
PURE_PW = PEERS_ROOT / "usr/bin/pure-pw"

HOST = "127.0.0.1"
NAMES = ("ketch", "pyftpdlib", "vsftpd", "pure-ftpd")
#: Run only when named (--servers): the floor, a bound rather than a peer (floor_server.py).
EXTRA_NAMES = ("floor",)
#: The scenarios the extra servers can serve.
FLOOR_SCENARIOS = ("sessions",)
# The FTPS certificate (one per run, self-signed ECDSA P-256, as `ketch cert` makes) names these.
TLS_HOSTS = (HOST, "localhost")
TLS_KEY_TYPE = "ECDSA P-256"
USER, PASSWORD = "bench", "bench-Pa55"
MAX_CONNECTIONS = 2000
# pure-ftpd caps its clients at half its passive ports: 2,500 ports leave room for 1,000+.
PASSIVE_SIZE = 2500
PASSIVE_BASE = 10000  # ketch 10000-12499, pyftpdlib 12500-14999, and so on
NOBODY = 65534
# Processes of the multi-process variants (the workers scenario).
WORKERS = 2
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
_CHEAP_HASH = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


# -- ports -------------------------------------------------------------------------


def passive_range(index: int) -> tuple[int, int]:
    low = PASSIVE_BASE + index * PASSIVE_SIZE
    high = low + PASSIVE_SIZE - 1
    ephemeral = ephemeral_ports()
    if low <= ephemeral.stop - 1 and high >= ephemeral.start:
        print(f"bench: warning: passive ports {low}-{high} overlap the ephemeral range")
    return low, high


def control_ports(count: int) -> list[int]:
    """Free ports P with P-1 free too (ketch's active mode sends from P-1), below 10000."""
    found: list[int] = []
    port = PASSIVE_BASE - 20
    while len(found) < count and port > 1100:
        if bindable(port) and bindable(port - 1):
            found.append(port)
            port -= 2
        port -= 1
    if len(found) < count:
        raise SystemExit("bench: no free control ports below 10000")
    return found


def listen_backlog(port: int) -> int | None:
    """The backlog of whatever listens on HOST:port (``ss`` shows it as Send-Q)."""
    try:
        out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                             text=True, timeout=5, check=False).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3] == f"{HOST}:{port}":
            return int(fields[2])
    return None


# -- a server ----------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    passive: tuple[int, int]
    disk_dir: Path  # where the login's working directory is on disk
    remote_dir: str  # that directory, relative to the login directory ("" or "pub")
    command: list[str]
    log_path: Path
    user: str = USER
    password: str = PASSWORD
    env: dict[str, str] | None = None
    notes: str = ""
    version: str = ""
    backlog: int | None = None  # the control socket's listen backlog, as ss reports it
    wrapped: bool = False  # started under reaper.py: the tree's root is the wrapper
    runtime: str = ""  # what the server says it runs on (ketch: "1 process on uvloop")
    #: Other ways to run the same server, by name ("tls", "workers"), and their notes.
    variants: dict[str, list[str]] = field(default_factory=dict)
    variant_notes: dict[str, str] = field(default_factory=dict)
    tls_files: CertificateFiles | None = None  # the certificate the "tls" variant serves
    variant: str = ""  # the variant it runs (or will start) with; "": the plain command
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def remote(self, name: str) -> str:
        return f"{self.remote_dir}/{name}" if self.remote_dir else name

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    def use_variant(self, variant: str) -> None:
        """Run ``variant`` ("" for the plain server) from now on: a restart when it changes."""
        if variant and variant not in self.variants:
            raise RuntimeError(f"{self.name} has no {variant!r} variant")
        if variant != self.variant:
            self.variant = variant
            if self.process is not None:
                self.restart()

    def start(self) -> None:
        command = self.variants[self.variant] if self.variant else self.command
        with self.log_path.open("ab") as log:
            wrapper = [sys.executable, str(BENCH / "reaper.py")] if self.wrapped else []
            self.process = subprocess.Popen(
                wrapper + command,
                stdin=log,  # vsftpd and pure-ftpd write early errors to fd 0 (inetd style)
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self._greets():
                self.backlog = listen_backlog(self.port)
                self.runtime = self._runtime()
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start; log tail:\n{self.log_tail()}")

    def _runtime(self) -> str:
        """ketch's start-up lines name its worker processes and event loop."""
        for line in reversed(self.log_tail(40).splitlines()):
            if line.strip().startswith("workers "):
                return " ".join(line.split()[1:])
        return ""

    def _greets(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as sock:
                sock.settimeout(2)
                return sock.recv(256).startswith(b"220")
        except OSError:
            return False

    def stop(self) -> None:
        """End the server and every session process; bounded, safe to repeat."""
        process, self.process = self.process, None
        if process is None:
            return
        descendants = process_tree(process.pid)[1:]
        if process.poll() is None:
            # Sessions first, while the listener lives to reap them (else they are
            # left as zombies of PID 1, which in a container may never reap them).
            _kill(descendants)
            deadline = time.monotonic() + 2.0
            while len(process_tree(process.pid)) > 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            stop_group(process, STOP_TIMEOUT)
        signal_group(process, signal.SIGKILL)
        _kill(descendants)

    def restart(self) -> None:
        self.stop()
        self.start()

    # What the server's whole process tree uses.
    def tree(self) -> list[int]:
        return process_tree(self.pid)

    def cpu_seconds(self) -> float:
        """The tree's CPU time; of a wrapper, only what it reaped (orphaned sessions)."""
        root, *rest = self.tree()
        ticks = cpu_ticks(root, own=not self.wrapped) + sum(cpu_ticks(pid) for pid in rest)
        return ticks / CLOCK_TICKS

    def kernel_seconds(self) -> float:
        """The part of ``cpu_seconds`` spent in the kernel (system calls, TCP, softirqs)."""
        root, *rest = self.tree()
        ticks = kernel_ticks(root, own=not self.wrapped) + sum(kernel_ticks(pid) for pid in rest)
        return ticks / CLOCK_TICKS

    def server_pids(self) -> list[int]:
        """The tree without the wrapper."""
        return self.tree()[1:] if self.wrapped else self.tree()

    def rss_bytes(self) -> int:
        return sum(rss(pid) for pid in self.server_pids())

    def pss_bytes(self) -> int:
        return sum(pss(pid) for pid in self.server_pids())

    def settle(self, processes: int, timeout: float = 10.0) -> int:
        """Wait (bounded) until the tree is down to ``processes``; return its size."""
        deadline = time.monotonic() + timeout
        while True:
            size = len(self.tree())
            if size <= processes or time.monotonic() > deadline:
                return size
            time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- the four servers ----------------------------------------------------------------


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(str(value))


def make_ketch(
    base: Path, port: int, passive: tuple[int, int], src: Path, tls: CertificateFiles
) -> Server:
    home = base / "ketch"
    settings: dict[str, object] = {
        "listen_address": HOST,
        "port": port,
        "root": str(home),
        "banner": "ketch bench",
        "passive_ports": f"{passive[0]}-{passive[1]}",
        "active_source_port": "auto",
        "max_connections": MAX_CONNECTIONS,
        "max_connections_per_ip": MAX_CONNECTIONS,
        "max_sessions_per_user": 0,
        "ban_exempt": ["127.0.0.0/8"],
        "command_rate": 0.0,
        "login_failure_delay": 0.0,
        "log_level": "warning",
    }
    user = {
        "name": USER,
        "password_hash": _CHEAP_HASH.hash(PASSWORD),
        "home": str(home),
        "permissions": ["all"],
    }
    lines = [f"{key} = {_toml(value)}" for key, value in settings.items()]
    lines += ["", "[anonymous]", "enabled = false", "", "[[users]]"]
    lines += [f"{key} = {_toml(value)}" for key, value in user.items()]
    config, tls_config = base / "ketch.toml", base / "ketch-tls.toml"
    config.write_text("\n".join(lines) + "\n")
    # Top-level keys go before the first table: into the settings, not [[users]].
    tls_settings = {"tls_certificate": tls.certificate, "tls_key": tls.key,
                    "tls_required": "off", "tls_require_session_reuse": True}  # fmt: skip
    tls_lines = [f"{key} = {_toml(value)}" for key, value in tls_settings.items()]
    tls_config.write_text("\n".join(tls_lines + lines) + "\n")
    env = dict(os.environ, PYTHONPATH=str(src), PYTHONDONTWRITEBYTECODE="1")
    serve = [sys.executable, "-m", "ketch", "serve", "--config"]
    return Server(
        "ketch", port, passive, home, "", [*serve, str(config)], base / "ketch.log", env=env,
        notes="runs as root (no run_as)",
        variants={"tls": [*serve, str(tls_config)],
                  "workers": [*serve, str(config), "--workers", str(WORKERS)]},
        variant_notes={"tls": "tls_certificate, tls_key; tls_required off; "
                       "tls_require_session_reuse true (the default)",
                       "workers": f"--workers {WORKERS}: a supervisor and {WORKERS} worker "
                       "processes, one SO_REUSEPORT socket and passive-port slice each"},
    )  # fmt: skip


def make_pyftpdlib(
    base: Path, port: int, passive: tuple[int, int], tls: CertificateFiles
) -> Server:
    import pyftpdlib

    home = base / "pyftpdlib"
    command = [
        sys.executable, str(BENCH / "pyftpdlib_server.py"), "--port", str(port),
        "--home", str(home), "--user", USER, "--password", PASSWORD,
        "--passive", f"{passive[0]}-{passive[1]}", "--max-cons", str(MAX_CONNECTIONS),
    ]  # fmt: skip
    tls_command = [*command, "--certfile", str(tls.certificate), "--keyfile", str(tls.key)]
    return Server(
        "pyftpdlib", port, passive, home, "", command, base / "pyftpdlib.log",
        notes="default FTPServer: async, one process; plain-text DummyAuthorizer",
        version=pyftpdlib.__ver__,
        variants={"tls": tls_command, "workers": [*command, "--workers", str(WORKERS)]},
        variant_notes={"tls": "TLS_FTPHandler (pyOpenSSL), certfile, keyfile; TLS optional; "
                       "session reuse not checked",
                       "workers": f"serve_forever(worker_processes={WORKERS}): pre-fork, "
                       f"{WORKERS} processes on one listening socket and passive range"},
    )  # fmt: skip


def make_floor(base: Path, port: int, passive: tuple[int, int]) -> Server:
    home = base / "floor"
    command = [
        sys.executable, str(BENCH / "floor_server.py"), "--port", str(port), "--home", str(home),
        "--user", USER, "--password", PASSWORD, "--passive", f"{passive[0]}-{passive[1]}",
    ]  # fmt: skip
    return Server(
        "floor", port, passive, home, "", command, base / "floor.log",
        notes="bench/floor_server.py: one asyncio Protocol on uvloop, no features; "
        "a lower bound, not a peer",
    )  # fmt: skip


def _deb_version(package: str) -> str:
    debs = sorted((BENCH / ".peers" / "debs").glob(f"{package}_*.deb"))
    return debs[-1].name.split("_")[1] if debs else ""


def _vsftpd_user() -> pwd.struct_passwd:
    """The user anonymous sessions run as: nobody if its home exists, else daemon."""
    for name in ("nobody", "daemon"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            if entry.pw_uid != 0 and os.path.isdir(entry.pw_dir):
                return entry
    raise SystemExit("bench: no user (nobody, daemon) with an existing home for vsftpd")


def make_vsftpd(base: Path, port: int, passive: tuple[int, int], tls: CertificateFiles) -> Server:
    root, empty = base / "vsftpd" / "root", base / "vsftpd" / "empty"
    pub = root / "pub"
    ftp_user = _vsftpd_user()
    for directory in (empty, root, pub):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
    os.chown(empty, 0, 0)
    os.chown(root, 0, 0)  # vsftpd refuses an anonymous root its user may write to
    os.chown(pub, ftp_user.pw_uid, ftp_user.pw_gid)
    config = {
        "listen": "YES", "listen_ipv6": "NO", "listen_address": HOST,
        "listen_port": str(port), "background": "NO", "ftpd_banner": "vsftpd bench",
        "pasv_enable": "YES", "pasv_min_port": str(passive[0]),
        "pasv_max_port": str(passive[1]), "port_enable": "YES",
        "connect_from_port_20": "NO",
        "seccomp_sandbox": "NO",  # 3.0.3's filter kills sessions on today's libc
        "secure_chroot_dir": str(empty),
        "syslog_enable": "NO", "xferlog_enable": "NO", "dual_log_enable": "NO",
        "log_ftp_protocol": "NO", "vsftpd_log_file": str(base / "vsftpd.log"),
        "max_clients": str(MAX_CONNECTIONS), "max_per_ip": str(MAX_CONNECTIONS),
        "anonymous_enable": "YES", "local_enable": "NO", "no_anon_password": "YES",
        "write_enable": "YES", "anon_upload_enable": "YES",
        "anon_mkdir_write_enable": "YES", "anon_other_write_enable": "YES",
        "anon_world_readable_only": "NO", "anon_umask": "022",
        "anon_root": str(root), "ftp_username": ftp_user.pw_name,
        "nopriv_user": "nobody", "chown_uploads": "NO", "dirmessage_enable": "NO",
    }  # fmt: skip
    # FTPS: optional for anonymous too; data connections must resume the control
    # connection's session (require_ssl_reuse, the default); no client certificate asked
    # for; ssl_ciphers HIGH in case TLS 1.2 is negotiated (3.0.3's default is DES-CBC3-SHA).
    tls_config = {
        **config, "ssl_enable": "YES", "allow_anon_ssl": "YES",
        "rsa_cert_file": str(tls.certificate), "rsa_private_key_file": str(tls.key),
        "require_ssl_reuse": "YES", "ssl_request_cert": "NO", "ssl_ciphers": "HIGH",
        "force_anon_logins_ssl": "NO", "force_anon_data_ssl": "NO",
    }  # fmt: skip
    path, tls_path = base / "vsftpd.conf", base / "vsftpd-tls.conf"
    for written, settings in ((path, config), (tls_path, tls_config)):
        written.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        written.chmod(0o600)
    return Server(
        "vsftpd", port, passive, pub, "pub", [str(VSFTPD), str(path)],
        base / "vsftpd.log", user="anonymous", password="bench@", wrapped=True,
        notes=f"anonymous login (no password check), runs as {ftp_user.pw_name}; "
        "two processes per session (under reaper.py)", version=_deb_version("vsftpd"),
        variants={"tls": [str(VSFTPD), str(tls_path)]},
        variant_notes={"tls": "ssl_enable, allow_anon_ssl, rsa_cert_file, "
                       "rsa_private_key_file; require_ssl_reuse YES; ssl_request_cert NO; "
                       "ssl_ciphers HIGH"},
    )  # fmt: skip


def make_pure_ftpd(
    base: Path, port: int, passive: tuple[int, int], tls: CertificateFiles
) -> Server:
    home = base / "pure-ftpd"
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)
    os.chown(home, NOBODY, NOBODY)
    # `pure-pw useradd` hashes at t=1023 m=8 MiB (seconds per login): write the
    # passwd line with ketch's cheap argon2id hash and let `pure-pw mkdb` index it.
    passwd, database = base / "pureftpd.passwd", base / "pureftpd.pdb"
    database.unlink(missing_ok=True)
    fields = [USER, _CHEAP_HASH.hash(PASSWORD), str(NOBODY), str(NOBODY), "", f"{home}/./"]
    passwd.write_text(":".join(fields + [""] * 12) + "\n")
    passwd.chmod(0o600)
    made = subprocess.run(
        [str(PURE_PW), "mkdb", str(database), "-f", str(passwd)],
        capture_output=True, timeout=10, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        raise RuntimeError(f"pure-pw mkdb failed: {made.stderr.decode(errors='replace')}")
    command = [
        str(PURE_FTPD), "-S", f"{HOST},{port}", "-l", f"puredb:{database}",
        "-p", f"{passive[0]}:{passive[1]}", "-E", "-H", "-A", "-u", "1",
        "-f", "none",  # no syslog and (no -O) no transfer log
        "-c", str(MAX_CONNECTIONS), "-C", str(MAX_CONNECTIONS),
        "-L", "20000:5",  # LIST shows at most 2,000 entries by default
    ]  # fmt: skip
    # --tls=1: TLS optional (2 would refuse clear-text logins); --certfile=CERT,KEY.
    tls_command = [*command, "-Y", "1", "-2", f"{tls.certificate},{tls.key}"]
    return Server(
        "pure-ftpd", port, passive, home, "", command, base / "pure-ftpd.log",
        notes="virtual user (PureDB, cheap argon2id); two processes per session "
        "(under reaper.py)", version=_deb_version("pure-ftpd"), wrapped=True,
        variants={"tls": tls_command},
        variant_notes={"tls": "-Y 1 (TLS optional), -2 CERT,KEY; default cipher list"},
    )  # fmt: skip


def make_servers(names: list[str], base: Path, src: Path) -> list[Server]:
    """Set up (not start) the named servers, each with its own ports and directory."""
    base.mkdir(parents=True, exist_ok=True)
    tls = write_certificate(base / "tls", TLS_HOSTS, days=7, stem="bench", overwrite=True)
    ports = control_ports(len(NAMES) + len(EXTRA_NAMES))
    made: list[Server] = []
    for index, name in enumerate(NAMES + EXTRA_NAMES):
        if name not in names:
            continue
        port, passive = ports[index], passive_range(index)
        if name == "ketch":
            made.append(make_ketch(base, port, passive, src, tls))
        elif name == "pyftpdlib":
            made.append(make_pyftpdlib(base, port, passive, tls))
        elif name == "floor":
            made.append(make_floor(base, port, passive))
        elif name == "vsftpd":
            made.append(make_vsftpd(base, port, passive, tls))
        else:
            made.append(make_pure_ftpd(base, port, passive, tls))
    for server in made:
        server.tls_files = tls
        server.disk_dir.mkdir(parents=True, exist_ok=True)
        server.log_path.write_bytes(b"")
    return made


def missing_peers(names: list[str]) -> list[str]:
    wanted = {"vsftpd": [VSFTPD], "pure-ftpd": [PURE_FTPD, PURE_PW]}
    return [
        name for name in names
        if any(not os.access(path, os.X_OK) for path in wanted.get(name, []))
    ]  # fmt: skip
