"""How the server starts its helper processes (port-20 helper, listing workers).

Each is a fresh interpreter running one module's ``main(arguments)``: ``-I``
keeps the current directory and PYTHON* variables off its import path (the
server may have been started in a directory FTP users can write to, and the
port-20 helper stays root), the directory holding the server's own ketch
package goes first on it (a source checkout must not get another installed
ketch's helpers, which would speak another version of their protocol), and
UTF-8 mode is passed on so file names decode as they do in the server. The
helper starts in "/".
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["helper_command"]

_BOOT = (
    "import sys, importlib; sys.path.insert(0, sys.argv.pop(1)); "
    "sys.exit(importlib.import_module(sys.argv.pop(1)).main(sys.argv[1:]))"
)


def helper_command(module: str, *arguments: str) -> list[str]:
    """The command line that runs ``module.main(list(arguments))`` in an isolated interpreter."""
    utf8 = ["-X", "utf8"] if sys.flags.utf8_mode else []
    package_root = str(Path(__file__).resolve().parents[2])
    return [sys.executable, "-I", *utf8, "-c", _BOOT, package_root, module, *arguments]
