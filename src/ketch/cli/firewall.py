"""``ketch firewall``: print the firewall rules a server with this configuration needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ketch.tools.firewall import FAMILIES, FORMATS

__all__ = ["firewall"]


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The server's TOML file. [default: the settings `ketch serve` uses without one]",
)
@click.option(
    "--format",
    "format_name",
    type=click.Choice(FORMATS),
    required=True,
    help="What to print: an nft -f file, an iptables-restore file, a ufw or firewall-cmd "
    "script, a compose service, or a Kubernetes Service.",
)
@click.option(
    "--conntrack-helper",
    is_flag=True,
    help="Attach the FTP conntrack helper to the control port (optional; see the comments).",
)
@click.option(
    "--ssh-port",
    type=click.IntRange(1, 65535),
    help="SSH port to keep open. [default: 22]",
)
@click.option("--no-ssh", is_flag=True, help="Leave SSH out of the rules.")
@click.option(
    "--allow-port",
    "allow_ports",
    multiple=True,
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="Another TCP service of this host to keep open (repeatable): the nftables and "
    "iptables files drop every inbound port they do not name.",
)
@click.option(
    "--family",
    type=click.Choice(FAMILIES),
    help="iptables only: ipv4 for iptables-restore, ipv6 for ip6tables-restore. "
    "[default: the first the server listens on]",
)
@click.option("--port", type=int, help="Control port, overriding the configuration.")
@click.option(
    "--listen",
    "listen_address",
    metavar="ADDR",
    help="Listen address, overriding the configuration.",
)
@click.option(
    "--passive-ports", metavar="LOW-HIGH", help="Passive range, overriding the configuration."
)
@click.option(
    "--active-source-port",
    metavar="auto|ephemeral|N",
    help="Active-mode source port, overriding the configuration.",
)
def firewall(
    config_file: Path | None,
    format_name: str,
    conntrack_helper: bool,
    ssh_port: int | None,
    no_ssh: bool,
    allow_ports: tuple[int, ...],
    family: str | None,
    **flags: Any,
) -> None:
    """Print commented firewall rules for what this server needs open.

    Control port, passive range, active-mode source port, SSH (and the implicit
    FTPS port, from the file). --port, --listen, --passive-ports and
    --active-source-port override the file as they do for `ketch serve`, so the
    rules match the server you run.
    """
    from ketch.config import FLAGS, ConfigError, load_config
    from ketch.tools.firewall import FirewallError, plan_for, render

    if no_ssh and ssh_port is not None:
        raise click.UsageError("--ssh-port and --no-ssh contradict each other; give one")
    if allow_ports and format_name in ("docker-compose", "kubernetes"):
        raise click.UsageError(
            f"--allow-port applies to the host's firewall formats; {format_name} publishes "
            "the FTP ports only"
        )
    if family is not None and format_name != "iptables":
        raise click.UsageError(
            f"--family applies to --format iptables only; {format_name} covers both families"
        )
    overrides = {key: value for key, value in flags.items() if value is not None}
    source = overrides.get("active_source_port")
    if isinstance(source, str) and source.isdigit():
        overrides["active_source_port"] = int(source)
    try:
        config = load_config(config_file, overrides, flags=FLAGS)
        plan = plan_for(
            config,
            config_file=config_file,
            ssh_port=None if no_ssh else (ssh_port or 22),
            conntrack_helper=conntrack_helper,
            other_ports=allow_ports,
        )
        chosen = next((name for name in FAMILIES if name == family), plan.families[0])
        click.echo(render(plan, format_name, chosen), nl=False)
    except (ConfigError, FirewallError) as error:
        raise click.ClickException(str(error)) from None
    if format_name == "iptables" and family is None and len(plan.families) > 1:
        click.echo(
            f"ketch firewall: printed the {chosen} file; the server also listens on "
            f"{plan.families[1]}: add --family {plan.families[1]} for the ip6tables-restore file",
            err=True,
        )
