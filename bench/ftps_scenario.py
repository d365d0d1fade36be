"""The FTPS scenario: RETR and STOR of the big file over explicit FTPS, passive mode.

Every server is restarted with its TLS settings for this scenario (and
without them after it), all with the same self-signed ECDSA P-256
certificate. A transfer is AUTH TLS, login, PBSZ 0, PROT P, PASV, then RETR
or STOR with the data connection resuming the control connection's TLS
session; it is timed, and the server's CPU counted, from PASV to the final
226, as in the plain RETR and STOR scenarios. The client is bench/load_tls.py
(blocking ssl sockets, 1 MiB buffers); curl (``--ssl-reqd -k``) does the same
transfers once per server as a cross-check. The negotiated TLS version and
cipher of the control and data connections are tabled per server.
"""

from __future__ import annotations

import ssl
import subprocess
from typing import Any

from load_tls import TlsControl, TlsFacts, client_context
from report import Column, Table
from scenarios import (
    FAILED,
    MIB,
    Bench,
    Meter,
    TransferMedians,
    curl_transfer,
    meter_sample,
    prime_for_upload,
    warm_cache,
)
from servers import HOST, TLS_KEY_TYPE, Server

COLUMNS = ("RETR 1M", "STOR 1M", "curl RETR", "curl STOR")
CURL_OPTIONS = ("--ssl-reqd", "-k")


def ftps_tables(b: Bench) -> list[Table]:
    warm_cache(b.big)
    try:
        for server in b.servers:
            server.use_variant("tls")
        return _measure(b)
    finally:
        for server in b.servers:
            server.use_variant("")


def _transfer(b: Bench, server: Server, direction: str, context: ssl.SSLContext,
              buffer: bytearray) -> tuple[Meter, TlsFacts, TlsFacts]:  # fmt: skip
    """One logged-in session moving the big file: its meter, control and data TLS facts."""
    control = TlsControl.open(HOST, server.port, context)
    try:
        control.login(server.user, server.password)
        within = 60.0 + b.size / 10e6
        if direction == "stor":
            prime_for_upload(b, server)
        with Meter(server) as meter:
            if direction == "retr":
                got, data = control.download(f"RETR {server.remote('big.bin')}", buffer, within)
                if got != b.size:
                    raise OSError(f"received {got} of {b.size} bytes")
            else:
                data = control.upload(server.remote("up.bin"), b.size, b.block, within)
        if direction == "stor":
            stored = (server.disk_dir / "up.bin").stat().st_size
            if stored != b.size:  # a 226 for a cut-short upload would inflate MB/s
                raise OSError(f"stored {stored} of {b.size} bytes")
        return meter, control.facts, data
    finally:
        try:
            control.quit()
        except FAILED:
            control.close()
        if direction == "stor":
            (server.disk_dir / "up.bin").unlink(missing_ok=True)


def _measure(b: Bench) -> list[Table]:
    medians = TransferMedians()
    negotiated: dict[str, dict[str, Any]] = {server.name: {} for server in b.servers}
    buffer = bytearray(MIB)  # allocated once
    for round_ in range(1, b.rounds + 1):
        for server in b.in_turn(round_):
            assert server.tls_files is not None, f"{server.name} has no certificate"
            context = client_context(server.tls_files.certificate)
            for direction, column in (("retr", COLUMNS[0]), ("stor", COLUMNS[1])):
                try:
                    meter, control, data = _transfer(b, server, direction, context, buffer)
                except FAILED as error:
                    b.record({"scenario": "ftps", "server": server.name, "round": round_,
                              "variant": column,
                              "error": medians.failed(server.name, column, error)})  # fmt: skip
                    continue
                sample = meter_sample(b, meter)
                medians.add(server.name, column, sample)
                facts = _facts_row(control, data)
                _note_facts(negotiated[server.name], facts)
                b.record({"scenario": "ftps", "server": server.name, "round": round_,
                          "variant": column, "seconds": meter.wall, **facts,
                          **sample})  # fmt: skip
    for server in b.servers:
        for direction, column in (("retr", COLUMNS[2]), ("stor", COLUMNS[3])):
            try:
                sample = curl_transfer(b, server, "passive", direction, CURL_OPTIONS)
            except FAILED as error:
                medians.failed(server.name, column, error)
                continue
            medians.add(server.name, column, sample)
            b.record({"scenario": "ftps", "server": server.name, "client": "curl",
                      "variant": column, **sample})  # fmt: skip
    return _tables(b, medians, negotiated)


def _facts_row(control: TlsFacts, data: TlsFacts) -> dict[str, Any]:
    return {"control_tls": control.version, "control_cipher": control.cipher,
            "data_tls": data.version, "data_cipher": data.cipher,
            "data_resumed": "yes" if data.resumed else "no"}  # fmt: skip


def _note_facts(seen: dict[str, Any], facts: dict[str, Any]) -> None:
    """Keep what every transfer negotiated; a value that varied shows all its values."""
    for key, value in facts.items():
        before = seen.get(key)
        if before is None:
            seen[key] = value
        elif value not in before.split(" / "):
            seen[key] = f"{before} / {value}"


def _pyopenssl() -> str:
    """pyOpenSSL's version and the OpenSSL it brings (cryptography's, not the system's)."""
    try:
        import OpenSSL
    except ImportError:
        return "pyOpenSSL not installed"
    library = OpenSSL.SSL.OpenSSL_version(OpenSSL.SSL.OPENSSL_VERSION).decode()
    return f"pyOpenSSL {OpenSSL.__version__} on {library}"


def _tables(
    b: Bench, medians: TransferMedians, negotiated: dict[str, dict[str, Any]]
) -> list[Table]:
    curl = subprocess.run(["curl", "-V"], capture_output=True, text=True, timeout=10).stdout
    curl_line = curl.splitlines()[0] if curl else "curl"
    common = [
        f"{b.size / MIB:.0f} MiB file, passive, explicit FTPS (AUTH TLS, PBSZ 0, PROT P), "
        f"median of {b.rounds} rounds; curl {' '.join(CURL_OPTIONS)}: one run",
        "columns: direction and client buffer (RETR: 1 MiB recv_into buffer; STOR: 1 MiB "
        "write block), load client on blocking ssl sockets",
    ]
    tables = []
    for metric, title, better in (
        ("mbps", "FTPS throughput, MB/s (10^6 B/s)", "higher"),
        ("server_cpu", "FTPS server CPU, s/GiB (whole process tree)", "lower"),
        ("client_cpu", "FTPS client CPU, s/GiB (load client; curl columns: curl)", "lower"),
    ):
        columns = [Column(key, key, better) for key in COLUMNS]
        notes = common + (medians[metric].error_notes() if metric == "mbps" else [])
        tables.append(Table(title, columns, medians[metric].rows(b.names, columns), notes))
    columns = [
        Column("control_tls", "control TLS", None),
        Column("control_cipher", "control cipher", None),
        Column("data_tls", "data TLS", None),
        Column("data_cipher", "data cipher", None),
        Column("data_resumed", "data session resumed", None),
    ]
    rows = {name: {c.key: negotiated[name].get(c.key) for c in columns} for name in b.names}
    notes = [
        f"one self-signed {TLS_KEY_TYPE} certificate for every server, made for this run; "
        "the client offers TLS 1.2 and 1.3 (Python's default ciphers) and trusts that "
        "certificate only",
        f"ketch and the load client: Python's ssl on {ssl.OPENSSL_VERSION}; vsftpd and "
        f"pure-ftpd: the system's libssl.so.3; pyftpdlib: {_pyopenssl()}; {curl_line}",
    ]
    notes += [f"{server.name}: {server.variant_notes['tls']}" for server in b.servers]
    tables.append(Table("FTPS: negotiated TLS (load client)", columns, rows, notes))
    return tables
