"""The ``ketch`` command.

Server side: ``ketch serve``, ``ketch user hash``, ``ketch config example|check``
(serve.py). Client side, in curl's and lftp's manner: ``ketch ls|get|put|rm|
mkdir|mv`` (transfer.py) and ``ketch mirror`` (mirror.py), sharing the
options, credentials and exit codes of common.py.
"""

from __future__ import annotations

import errno
import io
import os
import sys

import click

from ketch import __version__
from ketch.cli import cert as cert_module
from ketch.cli import doctor as doctor_module
from ketch.cli import firewall as firewall_module
from ketch.cli import mirror as mirror_module
from ketch.cli import serve as serve_module
from ketch.cli import transfer as transfer_module

__all__ = ["main"]

_EPILOG = """\b
Exit codes of the client commands:
  0 success                        5 the server refused a command
  1 other failure                  6 data connection failed
  2 usage error (or a bad URL)     7 temporary server error or protocol error
  3 cannot connect                 8 local file error
  4 login refused                  9 incomplete: mirror failed some files, or
                                    ls could not read some listing lines
                                  10 --verify: the hashes differ
 130 interrupted (Ctrl-C)         143 stopped by SIGTERM
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=_EPILOG)
@click.version_option(__version__, prog_name="ketch")
def main() -> None:
    """ketch: an FTP server, client and tools that work through NAT and firewalls."""
    _fill_closed_standard_descriptors()
    if click.get_current_context().invoked_subcommand == "serve":
        # A server started as a daemon with its output closed still serves; what it
        # would print goes nowhere (its log goes where log_file says).
        if sys.stdout is None:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (for the process's life)
        if sys.stderr is None:
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    elif sys.stdout is None:  # started with stdout closed (ketch ls URL >&-)
        sys.stdout = io.TextIOWrapper(_ClosedStdout(), write_through=True)


def _fill_closed_standard_descriptors() -> None:
    """Open /dev/null on each of descriptors 0-2 that whoever started ketch left closed.

    Otherwise the next socket or file takes that number: libuv (uvloop) aborts the
    process when it closes a descriptor of its own below 3, and a write meant for
    stdout or stderr would land in a client's connection.
    """
    while (fd := os.open(os.devnull, os.O_RDWR)) <= 2:
        pass  # it now holds the free standard number; the next open tries the one after
    os.close(fd)


class _ClosedStdout(io.RawIOBase):
    """Stands in for a closed stdout: writing to it is a local error that says so."""

    def writable(self) -> bool:
        return True

    def write(self, _: object) -> int:
        raise OSError(errno.EBADF, "stdout is closed; send the output somewhere (> file)")


for _command in (
    serve_module.serve,
    serve_module.user,
    serve_module.config,
    transfer_module.ls,
    transfer_module.get,
    transfer_module.put,
    transfer_module.rm,
    transfer_module.mkdir,
    transfer_module.mv,
    mirror_module.mirror,
    cert_module.cert,
    doctor_module.doctor,
    firewall_module.firewall,
):
    main.add_command(_command)
