"""Real third-party FTP servers (vsftpd, pure-ftpd) on loopback, for testing ketch's client.

The binaries are not installed system-wide: Debian's FTP server packages
conflict with each other, so ``scripts/fetch-peer-servers .peers`` downloads
their .debs and unpacks them under ``.peers/root`` (``make test`` does it).

Both servers start as root and drop privileges to an unprivileged user, so
they need root; neither creates system users nor touches /etc:

* vsftpd serves *anonymous* logins with full write rights inside ``pub``:
  vsftpd refuses an anonymous root that the anonymous user may write to.
  Anonymous sessions run as ``vsftpd_ftp_user()`` (daemon on Debian).
  With ``vsftpd_tls_config`` it speaks FTPS (explicit or implicit) and, as
  configured on many real servers, insists that data connections resume the
  control connection's TLS session (``require_ssl_reuse``).
* pure-ftpd serves the virtual user ``alice`` from a PureDB file made with
  the unpacked ``pure-pw``, mapped to uid/gid 65534 and chrooted to a
  writable login directory; ``pure_ftpd_tls_args`` makes it FTPS-only.

Each server runs in the foreground in a process group of its own (so that
``stop()`` also ends the per-session processes), listens on 127.0.0.1 on a
free port and logs into a file under the ``base`` folder it is given.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import argon2
import trustme

from harness.processes import signal_group, stop_group
from harness.procfs import process_tree, signal_all

REPO = Path(__file__).resolve().parents[1]
# Where scripts/fetch-peer-servers unpacked the packages; KETCH_PEERS_DIR overrides.
PEERS_DIR = Path(os.environ.get("KETCH_PEERS_DIR", REPO / ".peers")).resolve()
PEERS_ROOT = PEERS_DIR / "root"
VSFTPD = PEERS_ROOT / "usr" / "sbin" / "vsftpd"
PURE_FTPD = PEERS_ROOT / "usr" / "sbin" / "pure-ftpd"
PURE_PW = PEERS_ROOT / "usr" / "bin" / "pure-pw"

HOST = "127.0.0.1"
# ketch's own test server passes 21000-21999; the peers keep to 22000-22999.
VSFTPD_PASSIVE_PORTS = (22000, 22099)
PURE_FTPD_PASSIVE_PORTS = (22100, 22199)
NOBODY = 65534  # uid and gid of nobody/nogroup on Debian

VSFTPD_USER, VSFTPD_PASSWORD = "anonymous", "ketch@example.com"
PURE_FTPD_USER, PURE_FTPD_PASSWORD = "alice", "s3cret"
_CHEAP_HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
START_ATTEMPTS = 3  # a free port found by binding port 0 can be taken before the server binds it


class PeerServerError(RuntimeError):
    """A peer server did not start; the message carries its log."""


@dataclass
class PeerServer:
    name: str  # "vsftpd" or "pure-ftpd"
    host: str
    port: int
    user: str
    password: str
    root: Path  # the user's login directory on disk: tests put and read files here
    workdir: str  # remote path, relative to the login directory, that the user may write in
    passive_ports: tuple[int, int]
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    owner: tuple[int, int] = (NOBODY, NOBODY)  # uid, gid the server reads and writes files as
    _stopped: bool = field(default=False, init=False, repr=False)

    @property
    def writable(self) -> Path:
        """The directory on disk that ``workdir`` names."""
        return self.root / self.workdir if self.workdir else self.root

    def url(self, path: str = "") -> str:
        """An ftp:// URL with the credentials, for ``path`` inside ``workdir``."""
        workdir = f"{self.workdir}/" if self.workdir else ""
        return f"ftp://{self.user}:{self.password}@{self.host}:{self.port}/{workdir}{path}"

    def log(self) -> str:
        return _read_log(self.log_path)

    def stop(self) -> None:
        """End the server and its session processes; safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        # vsftpd's session processes start sessions of their own, so they leave
        # the process group: find them now, before the listener's exit orphans them.
        descendants = process_tree(self.process.pid)[1:]
        stop_group(self.process, STOP_TIMEOUT)
        # Session processes outlive a listener that exits on SIGTERM: end them too.
        signal_group(self.process, signal.SIGKILL)
        signal_all(descendants, signal.SIGKILL)


def free_port(host: str = HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# -- vsftpd ------------------------------------------------------------------------


def vsftpd_ftp_user() -> pwd.struct_passwd:
    """The system user vsftpd maps anonymous logins to.

    vsftpd changes into that user's home directory before it changes into
    ``anon_root`` and dies if it cannot ("500 OOPS: cannot change
    directory:/nonexistent" for nobody). Debian's vsftpd package creates an
    ``ftp`` user for this; the tests create no users, so they take nobody if
    its home exists, else daemon (home /usr/sbin), which every Debian has.
    """
    for name in ("nobody", "daemon"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if user.pw_uid != 0 and os.path.isdir(user.pw_dir):
            return user
    raise PeerServerError("no system user (nobody, daemon) with an existing home for vsftpd")


def vsftpd_config(
    base: Path, port: int, passive_ports: tuple[int, int], log_path: Path, ftp_user: str
) -> dict[str, str]:
    """The settings for an anonymous-only vsftpd on 127.0.0.1:port, laid out under base."""
    return {
        "listen": "YES",
        "listen_ipv6": "NO",
        "listen_address": HOST,
        "listen_port": str(port),
        "background": "NO",
        "ftpd_banner": "ketch test peer vsftpd ready",
        "pasv_enable": "YES",
        "pasv_min_port": str(passive_ports[0]),
        "pasv_max_port": str(passive_ports[1]),
        "port_enable": "YES",
        "connect_from_port_20": "NO",
        # vsftpd 3.0.3's seccomp filter kills the session at the first STOR here
        # (the client sees the connection drop): it predates syscalls today's libc makes.
        "seccomp_sandbox": "NO",
        "secure_chroot_dir": str(base / "vsftpd-empty"),
        "syslog_enable": "NO",
        "xferlog_enable": "YES",
        "xferlog_file": str(base / "vsftpd-xfer.log"),
        "vsftpd_log_file": str(log_path),
        "dual_log_enable": "YES",
        "log_ftp_protocol": "YES",
        "anonymous_enable": "YES",
        "local_enable": "NO",
        "write_enable": "YES",
        "anon_upload_enable": "YES",
        "anon_mkdir_write_enable": "YES",
        "anon_other_write_enable": "YES",
        "anon_world_readable_only": "NO",
        "anon_umask": "022",
        "no_anon_password": "YES",
        "anon_root": str(base / "vsftpd-root"),
        "ftp_username": ftp_user,
        "nopriv_user": "nobody",
        "chown_uploads": "NO",
        "dirmessage_enable": "NO",
    }


def start_vsftpd(
    base: Path,
    *,
    extra_config: dict[str, str] | None = None,
    passive_ports: tuple[int, int] = VSFTPD_PASSIVE_PORTS,
) -> PeerServer:
    """Start vsftpd for anonymous logins; ``extra_config`` adds or overrides settings."""
    base = base.resolve()
    empty = base / "vsftpd-empty"
    anon_root = base / "vsftpd-root"
    pub = anon_root / "pub"
    for directory in (empty, anon_root, pub):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
    ftp_user = vsftpd_ftp_user()
    # vsftpd refuses an anonymous root its user can write to: root owns it, the user owns pub.
    os.chown(empty, 0, 0)
    os.chown(anon_root, 0, 0)
    os.chown(pub, ftp_user.pw_uid, ftp_user.pw_gid)
    log_path = base / "vsftpd.log"

    def launch(port: int) -> subprocess.Popen[bytes]:
        config = vsftpd_config(base, port, passive_ports, log_path, ftp_user.pw_name)
        config.update(extra_config or {})
        config_path = base / "vsftpd.conf"
        config_path.write_text("".join(f"{key}={value}\n" for key, value in config.items()))
        config_path.chmod(0o600)
        return _spawn([str(VSFTPD), str(config_path)], log_path)

    implicit_tls = (extra_config or {}).get("implicit_ssl") == "YES"
    port, process = _start_with_retries("vsftpd", launch, log_path, implicit_tls=implicit_tls)
    return PeerServer(
        name="vsftpd",
        host=HOST,
        port=port,
        user=VSFTPD_USER,
        password=VSFTPD_PASSWORD,
        root=anon_root,
        workdir="pub",
        passive_ports=passive_ports,
        log_path=log_path,
        process=process,
        owner=(ftp_user.pw_uid, ftp_user.pw_gid),
    )


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA and a server certificate it signed, as PEM files."""

    ca_file: Path  # the CA's certificate: what a client trusts (--cacert)
    server_file: Path  # the server's private key and certificate chain, in one file


def make_tls_files(base: Path) -> TlsFiles:
    """A trustme CA and a certificate from it for 127.0.0.1 and localhost, under ``base``."""
    base.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA()
    certificate = authority.issue_cert(HOST, "localhost")
    files = TlsFiles(base / "ca.pem", base / "server.pem")
    authority.cert_pem.write_to_path(str(files.ca_file))
    certificate.private_key_and_cert_chain_pem.write_to_path(str(files.server_file))
    files.server_file.chmod(0o600)
    return files


def vsftpd_tls_config(
    files: TlsFiles, *, implicit: bool = False, require_reuse: bool = True
) -> dict[str, str]:
    """``extra_config`` for start_vsftpd: FTPS only, for anonymous logins too.

    vsftpd 3.0.3 has no ``ssl_tlsv1_2`` (later versions split the versions
    up); its ``ssl_tlsv1`` allows every TLS version OpenSSL offers, 1.3 included.
    """
    return {
        "ssl_enable": "YES",
        "implicit_ssl": "YES" if implicit else "NO",
        "allow_anon_ssl": "YES",
        "force_anon_logins_ssl": "YES",
        "force_anon_data_ssl": "YES",
        "require_ssl_reuse": "YES" if require_reuse else "NO",
        "rsa_cert_file": str(files.server_file),
        "rsa_private_key_file": str(files.server_file),
        "ssl_tlsv1": "YES",
        "ssl_sslv2": "NO",
        "ssl_sslv3": "NO",
    }


# -- pure-ftpd ---------------------------------------------------------------------


def pure_ftpd_tls_args(files: TlsFiles) -> list[str]:
    """``extra_args`` for start_pure_ftpd: TLS required on control and data connections."""
    return ["-Y", "3", "-2", str(files.server_file)]  # -2: certificate and key in one file


def make_pure_db(base: Path, home: Path) -> Path:
    """A PureDB holding the virtual user alice (uid/gid nobody) with home ``home``.

    ``pure-pw useradd`` hashes with argon2id at t=1023, m=8 MiB: about 4 s to
    make and as long again at every login. So the passwd file is written here
    with a cheap argon2id hash (pure-ftpd verifies any parameters through
    libsodium) and ``pure-pw mkdb`` turns it into the PureDB.
    """
    passwd = base / "pureftpd.passwd"
    database = base / "pureftpd.pdb"
    database.unlink(missing_ok=True)
    hashed = _CHEAP_HASHER.hash(PURE_FTPD_PASSWORD)
    # account:password:uid:gid:gecos:home/./ (chroot there), then 12 unset limits.
    fields = [PURE_FTPD_USER, hashed, str(NOBODY), str(NOBODY), "", f"{home}/./", *[""] * 12]
    passwd.write_text(":".join(fields) + "\n")
    passwd.chmod(0o600)
    command = [str(PURE_PW), "mkdb", str(database), "-f", str(passwd)]
    result = subprocess.run(command, capture_output=True, timeout=10, check=False)
    if result.returncode != 0 or not database.exists():
        output = (result.stdout + result.stderr).decode(errors="replace")
        raise PeerServerError(f"pure-pw mkdb failed ({result.returncode}):\n{output}")
    return database


def start_pure_ftpd(
    base: Path,
    *,
    extra_args: list[str] | None = None,
    passive_ports: tuple[int, int] = PURE_FTPD_PASSIVE_PORTS,
) -> PeerServer:
    """Start pure-ftpd for the virtual user alice; ``extra_args`` go after the defaults."""
    base = base.resolve()
    home = base / "pure-root"
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)
    os.chown(home, NOBODY, NOBODY)
    database = make_pure_db(base, home)
    log_path = base / "pure-ftpd.log"

    def launch(port: int) -> subprocess.Popen[bytes]:
        command = [
            str(PURE_FTPD),
            "-S", f"{HOST},{port}",
            "-l", f"puredb:{database}",
            "-p", f"{passive_ports[0]}:{passive_ports[1]}",
            "-E",  # no anonymous logins
            "-H",  # no reverse DNS
            "-A",  # chroot everyone
            "-u", "1",  # allow every uid but root's (alice maps to nobody)
            "-f", "none",  # no syslog: there is none in a container; transfers go to -O
            "-O", f"clf:{log_path}",
            *(extra_args or []),
        ]  # fmt: skip
        return _spawn(command, log_path)

    port, process = _start_with_retries("pure-ftpd", launch, log_path)
    return PeerServer(
        name="pure-ftpd",
        host=HOST,
        port=port,
        user=PURE_FTPD_USER,
        password=PURE_FTPD_PASSWORD,
        root=home,
        workdir="",
        passive_ports=passive_ports,
        log_path=log_path,
        process=process,
    )


# -- starting and stopping -----------------------------------------------------------


def _spawn(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            # Both servers can run from inetd and send errors to the client on
            # fd 0 ("500 OOPS: ..." from vsftpd): make those land in the log too.
            stdin=log,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends the sessions too
        )


def _start_with_retries(
    name: str,
    launch: Callable[[int], subprocess.Popen[bytes]],
    log_path: Path,
    *,
    implicit_tls: bool = False,
) -> tuple[int, subprocess.Popen[bytes]]:
    failure = ""
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        process = launch(port)
        error = _wait_for_banner(process, port, implicit_tls)
        if error is None:
            return port, process
        exited = process.poll() is not None
        signal_group(process, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)
        failure = f"attempt {attempt} on port {port}: {error}"
        if not (exited and _port_taken(port)):
            break  # not a port clash: trying again would fail the same way
    raise PeerServerError(f"{name} did not start ({failure}); its log:\n{_read_log(log_path)}")


def _wait_for_banner(
    process: subprocess.Popen[bytes], port: int, implicit_tls: bool = False
) -> str | None:
    """None once the server answers with a 220 banner, else why it did not.

    With ``implicit_tls`` the banner comes after a TLS handshake (certificate
    not checked: this only asks whether the server is up).
    """
    deadline = time.monotonic() + START_TIMEOUT
    last = "no connection"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"exited with status {process.returncode}"
        try:
            banner = _read_banner(process, port, deadline, implicit_tls)
        except OSError as error:
            last = str(error)
            time.sleep(0.05)
            continue
        if banner.startswith(b"220"):
            return None
        last = f"banner {banner!r}"
        time.sleep(0.05)
    return f"no 220 banner within {START_TIMEOUT:g} s ({last})"


def _read_banner(
    process: subprocess.Popen[bytes], port: int, deadline: float, implicit_tls: bool = False
) -> bytes:
    """The first line from the port; ends early if the server exits (someone else's port)."""
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection((HOST, port), timeout=1))
        if implicit_tls:
            unchecked = ssl.create_default_context()
            unchecked.check_hostname = False
            unchecked.verify_mode = ssl.CERT_NONE
            sock = stack.enter_context(unchecked.wrap_socket(sock))
        sock.settimeout(0.2)
        received = b""
        while b"\n" not in received and time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                chunk = sock.recv(1024)
            except TimeoutError:
                continue
            if not chunk:
                break
            received += chunk
        return received.split(b"\n", 1)[0]


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def _read_log(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log file)"
