"""pyftpdlib as make bench runs it: the default FTPServer (asynchronous, one process).

With --workers N, the same server in pyftpdlib's pre-fork mode (N processes
sharing the listening socket and the passive range), for the workers scenario.

One DummyAuthorizer user (plain-text password, so logins cost next to
nothing) with every permission, a passive port range, connection limits
raised, and logging at WARNING so that no command or transfer is logged.
With --certfile: TLS_FTPHandler (explicit FTPS, optional; needs pyOpenSSL).
"""

from __future__ import annotations

import argparse
import logging

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.log import config_logging
from pyftpdlib.servers import FTPServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--passive", required=True, metavar="LOW-HIGH")
    parser.add_argument("--max-cons", type=int, default=2000)
    parser.add_argument("--certfile", help="FTPS: the certificate (PEM)")
    parser.add_argument("--keyfile", help="FTPS: its key (PEM)")
    parser.add_argument(
        "--workers", type=int, default=1, help="pre-fork this many processes (worker_processes)"
    )
    args = parser.parse_args()

    authorizer = DummyAuthorizer()
    authorizer.add_user(args.user, args.password, args.home, perm="elradfmwMT")
    low, high = (int(port) for port in args.passive.split("-"))

    base: type[FTPHandler] = FTPHandler
    if args.certfile:
        from pyftpdlib.handlers import TLS_FTPHandler

        base = TLS_FTPHandler

    class Handler(base):
        pass

    if args.certfile:
        Handler.certfile, Handler.keyfile = args.certfile, args.keyfile

    Handler.authorizer = authorizer
    Handler.passive_ports = list(range(low, high + 1))
    Handler.banner = "pyftpdlib bench"
    config_logging(level=logging.WARNING)
    server = FTPServer(("127.0.0.1", args.port), Handler)
    server.max_cons = args.max_cons
    server.max_cons_per_ip = args.max_cons
    server.serve_forever(worker_processes=args.workers)


if __name__ == "__main__":
    main()
