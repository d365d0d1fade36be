"""``ketch doctor URL``: why data connections to a server work or fail, and what to do.

The probe and the judgement live in ketch.tools (doctor_probe.py, doctor.py);
this module is the command line: options, the report for people or as one
JSON object, and the exit code (0 when at least one mode works).
"""

from __future__ import annotations

import json
import sys

import click

from ketch.cli.common import (
    TLS_OPTIONS,
    ClientOptions,
    _parse_address,
    _parse_ports,
    check_tls_options,
    exit_code_for,
    report_failure,
    run,
    setup_logging,
    target_for,
)
from ketch.cli.output import safe_text
from ketch.client.errors import DataConnectionFailed
from ketch.tools.doctor import Diagnosis, diagnose
from ketch.tools.doctor_probe import ProbeSettings, probe

__all__ = ["doctor", "render"]


@click.command()
@click.argument("url")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    metavar="S",
    help="Seconds each data connection may take.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.option("-u", "--user", metavar="USER[:PASSWORD]", help="Log in as USER.")
@click.option(
    "--netrc-file",
    type=click.Path(dir_okay=False),
    help="Read credentials from this file instead of ~/.netrc.",
)
@click.option(
    "--active-address",
    metavar="ADDR",
    callback=_parse_address,
    help="Address to advertise in active mode (this host's public address behind NAT).",
)
@click.option(
    "--active-ports",
    metavar="LOW-HIGH",
    callback=_parse_ports,
    help="Local ports to listen on in active mode. [default: any]",
)
@TLS_OPTIONS[0]
@TLS_OPTIONS[1]
@TLS_OPTIONS[2]
@click.option("-v", "--verbose", is_flag=True, help="Show the FTP conversation on stderr.")
def doctor(
    url: str,
    timeout: float,
    as_json: bool,
    user: str | None,
    netrc_file: str | None,
    active_address: str | None,
    active_ports: range | None,
    ftps: bool,
    cacert: str | None,
    insecure: bool,
    verbose: bool,
) -> None:
    """Find out which data-connection modes work with a server, and why the others fail.

    \b
    Connects and logs in, asks SITE NATINFO (ketch servers say what address
    they see), then lists the URL's path once each with EPSV, PASV (trusting
    its address), PASV connecting to the server's own address, EPRT and PORT.
    Prints one line per step, a verdict, and fixes for you and for the
    server's admin. Exit code 0 when at least one mode works.
    """
    options = ClientOptions(
        user=user,
        netrc_file=netrc_file,
        verbose=verbose,
        quiet=as_json and not verbose,
        timeout=timeout,
        data_timeout=timeout,
        active_address=active_address,
        active_ports=active_ports,
        ftps=ftps,
        cacert=cacert,
        insecure=insecure,
    )
    check_tls_options(cacert, insecure)
    setup_logging(options)
    try:
        target = target_for(url, options)  # once: it may prompt for the password
    except Exception as error:
        report_failure(error, verbose=verbose)
    settings = ProbeSettings(
        host=target.url.host,
        port=target.url.port,
        user=target.user,
        password=target.password,
        path=target.path,
        timeout=timeout,
        active_address=active_address,
        active_ports=active_ports,
        tls=target.tls,
        cafile=cacert,
        verify=not insecure,
    )

    async def work() -> int:
        diagnosis = diagnose(await probe(settings))
        if as_json:
            click.echo(json.dumps(diagnosis.as_json()))
        else:
            for line in render(diagnosis):
                click.echo(safe_text(line))
        sys.stdout.flush()
        return _exit_code(diagnosis, target.url.host, as_json)

    run(options, work)


def _exit_code(diagnosis: Diagnosis, host: str, as_json: bool) -> int:
    """0 when a mode works; else the exit code of the client's error class, after its line."""
    where = "the JSON verdict" if as_json else "the verdict above"
    error = diagnosis.observations.fatal
    if error is None and not diagnosis.any_works:
        error = DataConnectionFailed(
            f"no data connection could be made with {host} in any mode",
            f"see {where} and its fixes",
            mode="any",
        )
    if error is None:
        return 0
    click.echo(f"ketch: {safe_text(str(error))}", err=True)
    return exit_code_for(error)


def render(diagnosis: Diagnosis) -> list[str]:
    """The report for people: steps, one line per mode, rewrites, verdict, fixes."""
    observations = diagnosis.observations
    lines = [f"ketch doctor {observations.url}"]
    for step in observations.steps:
        lines.append(f"  {step.name:<11} {'ok' if step.ok else 'FAILED':<6} {step.text}")
    for name, result in diagnosis.modes.items():
        state = "works" if result.works else "FAILS" if result.applies else "n/a"
        why = f"{result.problem}: " if result.problem and result.applies else ""
        lines.append(f"  {name:<11} {state:<6} {why}{result.detail}")
    if diagnosis.rewrites:
        lines.append("Rewritten on the way:")
        lines.extend(f"  - {text}" for text in diagnosis.rewrites)
    lines.append(f"Verdict: {diagnosis.verdict}")
    for title, fixes in (
        ("What you can do:", diagnosis.client_fixes),
        ("What the server's admin can do:", diagnosis.server_fixes),
    ):
        if fixes:
            lines.append(title)
            lines.extend(f"  - {fix}" for fix in fixes)
    return lines
