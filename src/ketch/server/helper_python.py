"""How the server starts its helper processes (port-20 helper, listing workers).

Each is a fresh interpreter running one module's ``main(arguments)``. ``-I``
keeps the current directory and PYTHON* variables off its import path: the
server may have been started in a directory FTP users can write to, and the
port-20 helper stays root. The ``ketch`` package itself is imported from the
directory the server's own copy lives in, even when another ketch is
installed (a source checkout must not get helpers that speak another
version of their protocol); that directory is never put on the import path,
so nothing else in it (site-packages, as a rule) can stand in for a standard
module. UTF-8 mode is passed on so file names decode as they do in
the server, and the helper starts in "/".
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["helper_command"]

# The ketch package is loaded from the given directory alone, which never joins
# sys.path; its submodules are then found through ketch.__path__.
_BOOT = (
    "import sys, importlib, importlib.machinery, importlib.util; "
    "spec = importlib.machinery.PathFinder.find_spec('ketch', [sys.argv.pop(1)]); "
    "ketch = sys.modules['ketch'] = importlib.util.module_from_spec(spec); "
    "spec.loader.exec_module(ketch); "
    "sys.exit(importlib.import_module(sys.argv.pop(1)).main(sys.argv[1:]))"
)


def helper_command(module: str, *arguments: str) -> list[str]:
    """The command line that runs ``module.main(list(arguments))`` in an isolated interpreter."""
    utf8 = ["-X", "utf8"] if sys.flags.utf8_mode else []
    package_root = str(Path(__file__).resolve().parents[2])
    return [sys.executable, "-I", *utf8, "-c", _BOOT, package_root, module, *arguments]
