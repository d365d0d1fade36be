"""How helper processes start (ketch.server.helper_python): whose ketch, whose standard library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ketch.server.helper_python import _BOOT, helper_command


def test_ketch_comes_from_the_given_root_and_nothing_else_there_is_imported(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    (root / "ketch").mkdir(parents=True)
    (root / "ketch" / "__init__.py").write_text("")
    (root / "ketch" / "probe.py").write_text(
        "import asyncio, json, sys\n"
        "import ketch\n"
        "def main(arguments):\n"
        "    print(ketch.__file__, asyncio.__file__, json.__file__, *arguments, sep='\\n')\n"
        "    return 0\n"
    )
    # Whatever else lies beside the package must not stand in for a standard module.
    (root / "asyncio.py").write_text("raise SystemExit('the planted asyncio was imported')\n")
    (root / "json").mkdir()
    (root / "json" / "__init__.py").write_text(
        "raise SystemExit('the planted json was imported')\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", _BOOT, str(root), "ketch.probe", "--an", "argument"],
        capture_output=True, text=True, timeout=30, cwd="/",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ketch_file, asyncio_file, json_file, *arguments = done.stdout.splitlines()
    assert ketch_file == str(root / "ketch" / "__init__.py")
    assert not asyncio_file.startswith(str(root)) and not json_file.startswith(str(root))
    assert arguments == ["--an", "argument"]


def test_the_command_is_isolated_and_names_this_ketch() -> None:
    command = helper_command("ketch.server.listing_worker", "7")
    assert command[:2] == [sys.executable, "-I"]
    root = command[command.index(_BOOT) + 1]
    assert (Path(root) / "ketch" / "server" / "helper_python.py").is_file()
    assert command[-2:] == ["ketch.server.listing_worker", "7"]
