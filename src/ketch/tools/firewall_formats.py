"""``ketch firewall`` for front-ends and containers: ufw, firewalld, Docker Compose, Kubernetes.

ufw and firewalld get shell scripts of the commands an admin would type; the
container formats get the YAML that publishes the same ports, with the
caveats that bite FTP there (one proxy process per published port, the
client address lost to SNAT, data connections reaching another replica).
The YAML is written by hand, so every string that could be misread is quoted.
"""

from __future__ import annotations

import json

from ketch.tools.firewall import (
    Family,
    FirewallPlan,
    comment_block,
    explain_active,
    explain_header,
    explain_helper,
    explain_passive,
    wrap,
)

__all__ = [
    "LARGE_RANGE",
    "render_docker_compose",
    "render_firewalld",
    "render_kubernetes",
    "render_ufw",
]

#: Passive ranges bigger than this get a warning in the container formats.
LARGE_RANGE = 50
#: The range those warnings suggest instead.
SUGGESTED_RANGE_SIZE = 20


def _suggested_range(plan: FirewallPlan) -> str:
    low = plan.passive_ports.low
    return f'passive_ports = "{low}-{min(low + SUGGESTED_RANGE_SIZE - 1, 65535)}"'


def _script(plan: FirewallPlan, title: str, usage: list[str], body: list[str]) -> str:
    lines = ["#!/bin/sh", *comment_block(explain_header(plan, title, usage)), "set -e", ""]
    return "\n".join([*lines, *body]) + "\n"


# -- ufw -------------------------------------------------------------------------------------


def _ufw_allow(plan: FirewallPlan, ports: str, comment: str) -> str:
    """One ``ufw allow``, narrowed to the listen address or family when the server is."""
    if plan.listen_address is not None:
        target = f"proto tcp to {plan.listen_address} port {ports}"
        if plan.listen_interface is not None:  # a link-local address: on its link only
            target = f"in on {plan.listen_interface} {target}"
    elif not plan.ipv6:
        target = f"proto tcp to 0.0.0.0/0 port {ports}"  # "any" would add an IPv6 rule too
    else:
        target = f"{ports}/tcp"
    return f"ufw allow {target} comment '{comment}'"


def render_ufw(plan: FirewallPlan, family: Family = "ipv4") -> str:
    """A shell script of ``ufw`` commands; ufw covers IPv4 and IPv6 itself."""
    del family
    passive = plan.passive_ports
    body = [
        "# Incoming connections are refused unless allowed below; outgoing ones are",
        "# allowed (both are ufw's defaults, set here so the script says what it relies on).",
        "ufw default deny incoming",
        "ufw default allow outgoing",
    ]
    if plan.ssh_port is not None:
        body += [
            f"# SSH on port {plan.ssh_port}, so enabling ufw does not lock you out.",
            f"ufw allow {plan.ssh_port}/tcp comment 'ssh'",
        ]
    if plan.other_ports:
        body.append("# Other services of this host (--allow-port).")
        body += [f"ufw allow {port}/tcp comment 'other service'" for port in plan.other_ports]
    body += [
        "# FTP control connection: commands and replies.",
        _ufw_allow(plan, str(plan.control_port), "ketch: FTP control"),
    ]
    if plan.implicit_tls_port is not None:
        body += [
            "# Implicit FTPS: a control connection that is TLS from the first byte.",
            _ufw_allow(plan, str(plan.implicit_tls_port), "ketch: implicit FTPS"),
        ]
    body += [
        *comment_block(explain_passive(plan)),
        _ufw_allow(plan, f"{passive.low}:{passive.high}", "ketch: passive data connections"),
        *comment_block(
            explain_active(
                plan,
                "ufw allows outgoing connections by default; with `ufw default deny "
                "outgoing` this rule lets them out:",
            )
        ),
    ]
    source = plan.active_source_port
    if source is not None:
        body.append(f"# ufw allow out proto tcp from any port {source}")
    else:
        body.append("# ufw allow out proto tcp to any port 1024:65535")
    body += [
        *comment_block(explain_helper(plan)),
        "# ufw cannot attach a helper itself. To do it anyway, put these lines at the top",
        "# of /etc/ufw/before.rules (and before6.rules), above *filter, then `ufw reload`:",
        "#   *raw",
        f"#   -A PREROUTING -p tcp --dport {plan.control_port} -j CT --helper ftp",
        "#   COMMIT",
    ]
    if plan.conntrack_helper:
        body.append("# (--conntrack-helper was given: ufw needs the manual step above.)")
    body += [
        "",
        "# Turn the firewall on (asks for no confirmation) and show the result.",
        "ufw --force enable",
        "ufw status verbose",
    ]
    usage = [
        "Run as root: `sh FILE`. Running it again changes nothing (ufw skips rules it",
        "has). ufw applies each rule to IPv4 and IPv6 (IPV6=yes in /etc/default/ufw).",
    ]
    return _script(plan, "ufw rules", usage, body)


# -- firewalld -------------------------------------------------------------------------------


def _firewalld_open(plan: FirewallPlan, ports: str) -> str:
    """Open ``ports`` (firewalld's "LOW-HIGH" syntax) in the default zone."""
    if plan.listen_address is None and plan.ipv6:
        return f"firewall-cmd --permanent --add-port={ports}/tcp"
    # Plain ports apply to every address and family; a rich rule can narrow both.
    family = "ipv4" if plan.ipv4 else "ipv6"
    destination = f' destination address="{plan.listen_address}"' if plan.listen_address else ""
    rule = f'rule family="{family}"{destination} port port="{ports}" protocol="tcp" accept'
    return f"firewall-cmd --permanent --add-rich-rule='{rule}'"


def _firewalld_helper(plan: FirewallPlan) -> list[str]:
    port = plan.control_port
    if port == 21 and plan.listen_address is None and plan.ipv6:
        return [
            "# firewalld's ftp service is port 21 with the ftp helper attached.",
            "firewall-cmd --permanent --add-service=ftp",
        ]
    return [
        "# A service of our own: the control port with the ftp helper attached to it",
        "# (firewalld 0.9 or later). The helper must also know the port.",
        f"firewall-cmd --permanent --helper=ftp --add-port={port}/tcp",
        "firewall-cmd --permanent --info-service=ketch-ftp >/dev/null 2>&1 ||",
        "    firewall-cmd --permanent --new-service=ketch-ftp",
        f"firewall-cmd --permanent --service=ketch-ftp --add-port={port}/tcp",
        "firewall-cmd --permanent --service=ketch-ftp --add-helper=ftp",
        "firewall-cmd --permanent --add-service=ketch-ftp",
    ]


def render_firewalld(plan: FirewallPlan, family: Family = "ipv4") -> str:
    """A shell script of ``firewall-cmd --permanent`` commands, then ``--reload``."""
    del family
    passive = plan.passive_ports
    body: list[str] = []
    if plan.ssh_port == 22:
        body += [
            "# SSH, so reloading does not lock you out.",
            "firewall-cmd --permanent --add-service=ssh",
        ]
    elif plan.ssh_port is not None:
        body += [
            f"# SSH on port {plan.ssh_port}, so reloading does not lock you out.",
            f"firewall-cmd --permanent --add-port={plan.ssh_port}/tcp",
        ]
    if plan.other_ports:
        body.append("# Other services of this host (--allow-port).")
        body += [f"firewall-cmd --permanent --add-port={port}/tcp" for port in plan.other_ports]
    body.append("# FTP control connection: commands and replies.")
    if plan.conntrack_helper:
        body += _firewalld_helper(plan)
    else:
        body.append(_firewalld_open(plan, str(plan.control_port)))
    if plan.implicit_tls_port is not None:
        body += [
            "# Implicit FTPS: a control connection that is TLS from the first byte.",
            _firewalld_open(plan, str(plan.implicit_tls_port)),
        ]
    body += [
        *comment_block(explain_passive(plan)),
        _firewalld_open(plan, f"{passive.low}-{passive.high}"),
        *comment_block(
            explain_active(
                plan, "firewalld does not filter outgoing connections unless a policy says so."
            )
        ),
        *comment_block(explain_helper(plan)),
    ]
    if not plan.conntrack_helper:
        body += [
            "# Not enabled (`ketch firewall --conntrack-helper` adds it). With port 21,",
            "# `--add-service=ftp` would open it and attach the helper in one step.",
        ]
    body += ["", "# Apply the permanent configuration now.", "firewall-cmd --reload"]
    usage = [
        "Run as root: `sh FILE`. Running it again changes nothing (firewalld warns",
        "ALREADY_ENABLED and goes on). Rules go to the default zone: add --zone=NAME to",
        "each command for another. firewalld covers IPv4 and IPv6 itself.",
    ]
    if plan.listen_interface is not None:
        # A zone is how firewalld ties rules to an interface: rich rules cannot name one.
        usage += wrap(
            f"The rules match {plan.listen_address} in that zone; listen_address is on "
            f"interface {plan.listen_interface}, so that zone must be the one "
            f"{plan.listen_interface} is in (firewall-cmd --get-zone-of-interface="
            f"{plan.listen_interface})."
        )
    return _script(plan, "firewalld rules", usage, body)


# -- docker compose --------------------------------------------------------------------------


def _compose_files(plan: FirewallPlan) -> list[str]:
    """The command and volumes: each file at the same path inside as outside, so the
    configuration's paths (relative ones are read from the file's directory) hold there."""
    config = str(plan.config_file) if plan.config_file else "/etc/ketch/ketch.toml"
    volumes = [f"{config}:{config}:ro"]
    volumes += [f"{path}:{path}" for path in plan.served_directories]
    volumes += [f"{path}:{path}:ro" for path in plan.tls_files]
    lines = [
        f"    command: {json.dumps(['ketch', 'serve', '--config', config])}",
        "    volumes:",
    ]
    if plan.config_file is None:
        lines.append("      # No --config given: write the file the server is to read here.")
    return lines + [f"      - {json.dumps(volume)}" for volume in volumes]


def render_docker_compose(plan: FirewallPlan, family: Family = "ipv4") -> str:
    """A compose service publishing the control port and the passive range 1:1."""
    del family
    passive = plan.passive_ports
    notes = [
        "Docker Compose: a service that publishes what the server needs. Merge it into your",
        "compose.yaml; the image is one with ketch installed (`pip install ketch`).",
        "",
        "masquerade_address in ketch.toml must be the Docker host's public address:",
        "clients connect to the host, and without it PASV advertises the container's own",
        "address (172.x), which nobody outside can reach. EPSV needs no address.",
    ]
    if plan.masquerade_address:
        notes.append(f"It is {plan.masquerade_address} now: check that is the host's address.")
    if plan.listen_address is not None:
        notes.append(
            f"listen_address = {plan.listen_shown} will not exist in the container: "
            "leave it out there."
        )
    notes += [
        "",
        "The passive range is published 1:1 (the same numbers outside and inside): PASV",
        "advertises the port the server listens on, so a mapping to other numbers breaks it.",
        f"Docker starts one docker-proxy process per published port ({passive.size} here)",
        "unless its userland-proxy is off; a large range is slow to start and costs memory.",
        "Prefer `network_mode: host` (below; then drop `ports:`), or a small range, e.g.",
        f"{_suggested_range(plan)}.",
    ]
    if passive.size > LARGE_RANGE:
        notes.append(f"WARNING: {passive.size} ports is a large range to publish this way.")
    notes += [
        "Active mode leaves through Docker's NAT, which may change the source port;",
        "passive mode is the one to rely on here.",
        "",
        "The configuration file, the directories it serves and its TLS files are mounted",
        "at the paths they have on this machine, so the file's paths hold in the container.",
    ]
    ports = [
        "      # FTP control connection.",
        f'      - "{plan.control_port}:{plan.control_port}"',
    ]
    if plan.implicit_tls_port is not None:
        tls = plan.implicit_tls_port
        ports += ["      # Implicit FTPS.", f'      - "{tls}:{tls}"']
    ports += [
        *comment_block(explain_passive(plan), indent="      "),
        f'      - "{passive.low}-{passive.high}:{passive.low}-{passive.high}"',
    ]
    lines = [
        *comment_block(notes),
        "services:",
        "  ketch:",
        "    image: ketch",
        *_compose_files(plan),
        "    restart: unless-stopped",
        "    # For a large passive range: the host's network, no proxies, no port list.",
        "    # network_mode: host",
        "    ports:",
        *ports,
    ]
    return "\n".join(lines) + "\n"


# -- kubernetes ------------------------------------------------------------------------------


def _service_port(name: str, port: int) -> list[str]:
    return [
        f"    - name: {name}",
        "      protocol: TCP",
        f"      port: {port}",
        f"      targetPort: {port}",
    ]


def render_kubernetes(plan: FirewallPlan, family: Family = "ipv4") -> str:
    """A LoadBalancer Service listing the control port and every passive port."""
    del family
    passive = plan.passive_ports
    notes = [
        "Kubernetes: a LoadBalancer Service for the ketch pods (label app: ketch).",
        "",
        "masquerade_address in ketch.toml must be this Service's external (LoadBalancer)",
        "IP, or a name resolving to it; find it with",
        "  kubectl get service ketch-ftp -o jsonpath='{.status.loadBalancer.ingress[0].ip}'",
        "Without it PASV advertises the pod's address. EPSV needs no address.",
        "Every passive port is listed with the same number outside and inside: PASV",
        "advertises the port the server listens on.",
        "Each port of a LoadBalancer Service also takes a NodePort (30000-32767 by",
        "default) unless allocateLoadBalancerNodePorts: false (Kubernetes 1.24+; only",
        "where the load balancer sends traffic straight to the pods).",
    ]
    if passive.size > LARGE_RANGE:
        notes += [
            "",
            f"WARNING: passive_ports {passive} makes {passive.size} Service ports. Cloud load",
            "balancers cap ports per load balancer (AWS NLB: 50 listeners by default) and",
            "NodePorts run out. Use a small range in ketch.toml, e.g.",
            f"  {_suggested_range(plan)}",
            "and generate this file again.",
        ]
    lines = [
        *comment_block(notes),
        "apiVersion: v1",
        "kind: Service",
        "metadata:",
        "  name: ketch-ftp",
        "  labels:",
        "    app: ketch",
        "spec:",
        "  type: LoadBalancer",
        "  # Keep the client's own address: the server accepts a passive data connection",
        "  # only from the address of the control connection (RFC 2577), and NAT of the",
        "  # default Cluster policy can make the two differ.",
        "  externalTrafficPolicy: Local",
        "  # The data connection must reach the pod holding the control connection.",
        "  sessionAffinity: ClientIP",
    ]
    if plan.ipv4 and plan.ipv6:
        lines += [
            "  # The server listens on IPv4 and IPv6; single-stack clusters use their one.",
            "  ipFamilyPolicy: PreferDualStack",
        ]
    elif plan.ipv6:
        lines += ["  ipFamilyPolicy: SingleStack", "  ipFamilies:", "    - IPv6"]
    lines += [
        "  selector:",
        "    app: ketch",
        "  ports:",
        "    # FTP control connection.",
        *_service_port("ftp", plan.control_port),
    ]
    if plan.implicit_tls_port is not None:
        lines += ["    # Implicit FTPS.", *_service_port("ftps-implicit", plan.implicit_tls_port)]
    lines += comment_block(explain_passive(plan), indent="    ")
    for port in range(passive.low, passive.high + 1):
        lines += _service_port(f"pasv-{port}", port)
    return "\n".join(lines) + "\n"
