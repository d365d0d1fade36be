"""The soak run's log scanner counts transfer results from the server's log lines."""

from __future__ import annotations

import logging
from pathlib import Path

from soak.soak_server import scan_log

from ketch.server.log_format import LOG_FORMAT, LogFormatter

FIELDS = "user=alice client=127.0.0.1 mode=PASV type=I path=/a.bin offset=0 bytes=10"
# As ketch.server.workers labels a worker's lines.
WORKER_FORMAT = LOG_FORMAT.replace("%(name)s", "%(name)s[worker 1]", 1)


def logged(message: str, *, level: int = logging.INFO, layout: str = LOG_FORMAT) -> str:
    """``message`` as the server's own formatter writes it, so the test follows the format."""
    record = logging.LogRecord("ketch.server", level, __file__, 1, message, None, None)
    return LogFormatter(layout).format(record)


def test_transfer_results_are_counted_with_a_reason_and_fields_after_it(
    tmp_path: Path,
) -> None:
    # Every result but ok ends in reason=; the log format may append session=N.
    log = tmp_path / "server.log"
    lines = [
        logged(f"transfer RETR {FIELDS} seconds=0.1 result=ok"),
        logged(f"transfer RETR {FIELDS} seconds=0.1 result=ok session=3"),
        logged(f'transfer STOR {FIELDS} seconds=0.1 result=refused reason="over the limit"'),
        logged(f"transfer STOR {FIELDS} seconds=0.1 result=error reason=EIO", layout=WORKER_FORMAT),
        # A reason quoting fields (escaped by log_field) must not count as its own result.
        logged(
            f'transfer RETR {FIELDS} seconds=0.1 result=failed reason="x \\" result=ok reason=q"'
        ),
        logged("internal error in RETR (client=127.0.0.1)", level=logging.ERROR),
    ]
    log.write_text("".join(line + "\n" for line in lines))
    scanned = scan_log(log)
    assert scanned["transfers"] == {
        "RETR failed": 1,
        "RETR ok": 2,
        "STOR error": 1,
        "STOR refused": 1,
    }
    assert scanned["levels"] == {"INFO": 5, "ERROR": 1}
