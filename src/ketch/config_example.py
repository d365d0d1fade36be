"""The commented example configuration that `ketch config example` prints.

It lists every key with its default; a unit test loads it, so it cannot drift
from what :mod:`ketch.config` accepts.
"""

DEFAULT_CONFIG_TOML = """\
# ketch FTP server configuration (TOML).
#
# Every key is optional; the values below are the defaults. Relative paths
# are relative to the directory this file is in.

# Address to listen on. Leave it out to listen on every address: "::" (IPv4
# and IPv6) where the system has IPv6, else "0.0.0.0".
# listen_address = "0.0.0.0"

# Control connection port; 0 picks any free port. The standard port 21
# needs administrator rights.
port = 2121

# The directory served to anonymous users. Leave it out to serve the
# directory the server is started in.
# root = "/srv/ftp"

# The first line clients see after connecting.
banner = "ketch FTP server ready."

# Ports for passive-mode (PASV/EPSV) data connections, "LOW-HIGH". Open them
# in the firewall; the range's size caps simultaneous passive transfers.
passive_ports = "50000-50999"

# The address PASV tells clients to connect to, when the server is behind
# NAT: its public IP address or a host name that resolves to it.
# masquerade_address = "ftp.example.com"

# Source port of active-mode (PORT/EPRT) data connections: "auto" (control
# port minus one, as RFC 959 suggests, or any free port if that fails),
# "ephemeral" (always any free port) or a fixed port number.
active_source_port = "auto"

# Let PORT/EPRT send data to another host than the client's (FXP). Unsafe:
# it allows bounce attacks (RFC 2577). Keep false unless you need FXP.
allow_foreign_addresses = false

# Most control connections open at once, in total and from one IP address.
max_connections = 512
max_connections_per_ip = 20

# Seconds a control connection may sit idle before it is closed.
idle_timeout = 300.0
# Seconds to wait for a data connection to be made (passive and active).
data_connect_timeout = 30.0
# Seconds a transfer may make no progress before it is aborted.
data_stall_timeout = 120.0
# Seconds to wait before answering a failed login (slows password guessing).
login_failure_delay = 1.0

# Longest command line accepted, in bytes (512 to 65536).
max_line_length = 4096

# debug, info, warning or error.
log_level = "info"

# Anonymous login: user "anonymous" or "ftp", any password.
[anonymous]
enabled = true
# Leave home out to use root.
# home = "/srv/ftp/pub"
# Permission words: list, read, write, append, delete, rename, mkdir, rmdir,
# all, read-only.
permissions = ["list", "read"]

# Virtual users, one [[users]] table each. Create password_hash with
# `ketch user hash`; the server never stores passwords themselves.
# [[users]]
# name = "alice"
# password_hash = "$argon2id$v=19$m=65536,t=3,p=4$..."
# home = "/srv/ftp/alice"
# permissions = ["all"]
"""
