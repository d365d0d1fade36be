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

# Host names the HOST command (RFC 7151, sent before USER) accepts; a client
# naming another host gets 504. Empty: any name is accepted (and logged).
host_names = []

# Ports for passive-mode (PASV/EPSV) data connections, "LOW-HIGH". Open them
# in the firewall; the range's size caps simultaneous passive transfers.
passive_ports = "50000-50999"

# The address PASV tells clients to connect to, when the server is behind
# NAT: its public IP address or a host name that resolves to it. Loopback
# clients are always told the local address.
# masquerade_address = "ftp.example.com"
# The same for sessions whose control connection is TLS, if it differs
# (FTPS hides PASV replies from NAT helpers, which cannot fix them up).
# tls_masquerade_address = "ftps.example.com"
# Seconds between look-ups of a host name above (or in masquerade_map), for
# dynamic DNS; a failed look-up keeps the last good address.
masquerade_refresh = 300.0

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

# Seconds a control connection may sit idle before it is closed (also: the longest a
# client may leave its replies unread once the server's buffers are full).
idle_timeout = 300.0
# Seconds to wait for a data connection to be made (passive and active).
data_connect_timeout = 30.0
# Seconds a transfer may make no progress before it is aborted.
data_stall_timeout = 120.0

# Uploads (STOR, STOU) go to a hidden temporary file in the same directory
# and replace the target only once complete, so a failed or aborted upload
# never leaves a truncated file. APPE and resumed uploads (REST) write to
# the file itself.
atomic_uploads = true
# Largest file an upload may produce, in bytes (0: no limit).
max_upload_size = 0
# Seconds a verified password is remembered (as a keyed digest, in memory only),
# so that the same user logging in again with it skips the costly argon2 check.
# Wrong passwords are always checked in full; 0 checks every login.
login_cache_seconds = 600.0
# Seconds to wait before answering a failed login (slows password guessing).
# The wait doubles with each further failure from the same IP address, up to
# login_failure_delay_max; a successful login to an account resets it (not an anonymous one).
login_failure_delay = 1.0
login_failure_delay_max = 8.0

# Temporary ban: after ban_after_failures failed logins from one IP address
# within ban_window seconds, connections from it get 421 for ban_duration
# seconds. 0 turns banning off. Unknown users and wrong passwords count alike.
ban_after_failures = 10
ban_window = 600.0
ban_duration = 900.0
# Networks that are never banned (still delayed), e.g. ["192.0.2.0/24", "::1/128"].
ban_exempt = []

# Most logged-in sessions of one user at once (0: no limit). A user's own
# max_sessions overrides it; anonymous has [anonymous] max_sessions.
max_sessions_per_user = 16

# Commands per second one session may send, sustained, after a burst of
# command_burst; faster clients are slowed down, not refused (0: no limit).
# A client that stays faster than the rate for command_flood_timeout seconds
# is disconnected with 421.
command_rate = 50.0
command_burst = 200
command_flood_timeout = 30.0

# Seconds a client may take to finish a command line it has started
# (protects against "slowloris" clients that never send the line end).
line_timeout = 30.0

# Longest command line accepted, in bytes (512 to 65536).
max_line_length = 4096

# debug, info, warning or error.
log_level = "info"

# When started as root (to use port 21, and port 20 for active mode), become
# this user right after binding the ports. It needs read (and, for accounts
# that may write, write) access to root and the homes. Started as root
# without it, the server warns and runs as root. Needs a restart to change.
# run_as = "ftp"

# Seconds running transfers may go on after SIGTERM before they are cut off
# (idle sessions are closed at once; a second SIGTERM stops at once).
shutdown_grace = 30.0

# Server processes sharing the control port (SO_REUSEPORT), for more than
# one CPU core. Each gets its own slice of passive_ports, so the range needs
# at least this many ports. Limits (connections, sessions per user, failed
# logins, rates) are kept per process; quotas need workers = 1.
workers = 1

# "auto" runs on uvloop when it is installed (pip install 'ketch[fast]'),
# else on asyncio's own event loop; "asyncio" or "uvloop" choose one.
event_loop = "auto"
# Big LIST/MLSD (2,000+ entries) reuse the names a directory had when last
# listed while its ctime shows no change (entries are still looked at afresh).
# Turn off on file systems that do not keep directory ctimes current (some
# FUSE ones, such as sshfs; NFS with a server clock behind this one's).
listing_cache = true

# FTPS (FTP over TLS, RFC 4217). With a certificate, clients may send AUTH TLS
# (curl --ssl-reqd, lftp ftp:ssl-force). The certificate file holds the
# server's certificate and its chain (PEM); tls_key its private key (leave it
# out when the key is in the same file). `ketch cert --host NAME` writes a
# self-signed pair. A reload (SIGHUP) loads a renewed certificate; with
# run_as, the files must then be readable by that user.
# tls_certificate = "/etc/ketch/ftp.example.com.crt"
# tls_key = "/etc/ketch/ftp.example.com.key"
# Who must use TLS: "off" (clients choose), "control" (USER/PASS only after
# AUTH TLS) or "all" (also every transfer, after PBSZ 0 and PROT P).
tls_required = "off"
# An encrypted data connection must resume the control connection's TLS
# session, as vsftpd's require_ssl_reuse, so that only the client that logged
# in can use it. curl, lftp and ketch do; set false for clients that do not
# (Python's ftplib, some old GUI clients).
tls_require_session_reuse = true
# A port for implicit FTPS (ftps://), where TLS starts with the first byte;
# 990 by convention. Needs workers = 1 for now.
# implicit_tls_port = 990

# Per-client-network PASV addresses, for clients that must be told another
# address than masquerade_address (say, the private one to clients on the
# server's own LAN). IPv4 networks; the most specific match wins, and it
# applies to loopback clients too. Values: an IPv4 address or a host name.
# [masquerade_map]
# "192.168.1.0/24" = "192.168.1.10"

# Anonymous login: user "anonymous" or "ftp", any password. Left out, enabled
# is true only while no accounts are configured (no [[users]], no --user): a
# server with accounts allows anonymous logins only where this says true.
[anonymous]
# enabled = true
# Leave home out to use root.
# home = "/srv/ftp/pub"
# Permission words: list, read, write, append, delete, rename, mkdir, rmdir,
# all, read-only.
permissions = ["list", "read"]
# Bytes per second for all anonymous sessions together (0: unlimited).
download_rate = 0
upload_rate = 0
# Most anonymous sessions at once, all counted as one user (0: no limit).
max_sessions = 0

# Virtual users, one [[users]] table each. Create password_hash with
# `ketch user hash`; the server never stores passwords themselves.
# [[users]]
# name = "alice"
# password_hash = "$argon2id$v=19$m=65536,t=3,p=4$..."
# home = "/srv/ftp/alice"
# permissions = ["all"]
# Bytes and regular files the home may hold (0: no quota).
# quota_bytes = 0
# quota_files = 0
# Bytes per second for all of this user's sessions together (0: unlimited).
# download_rate = 0
# upload_rate = 0
# Leave max_sessions out to use max_sessions_per_user; 0 means no limit.
# max_sessions = 4
"""
