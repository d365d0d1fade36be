"""The soak run's log scanner counts transfer results from the server's log lines."""

from __future__ import annotations

from pathlib import Path

from soak.soak_server import scan_log

STAMP = "2026-01-02 03:04:05,678 INFO ketch.server: "
FIELDS = "user=alice client=127.0.0.1 mode=PASV type=I path=/a.bin offset=0 bytes=10"


def test_transfer_results_are_counted_with_a_reason_and_fields_after_it(
    tmp_path: Path,
) -> None:
    # Every result but ok ends in reason=; the log format may append session=N.
    log = tmp_path / "server.log"
    lines = [
        f"transfer RETR {FIELDS} seconds=0.1 result=ok",
        f"transfer RETR {FIELDS} seconds=0.1 result=ok session=3",
        f'transfer STOR {FIELDS} seconds=0.1 result=refused reason="over the limit" session=4',
        f"transfer STOR {FIELDS} seconds=0.1 result=error reason=EIO",
        # A reason quoting fields (escaped by log_field) must not count as its own result.
        f'transfer RETR {FIELDS} seconds=0.1 result=failed reason="x \\" result=ok reason=q"',
    ]
    log.write_text("".join(STAMP + line + "\n" for line in lines))
    assert scan_log(log)["transfers"] == {
        "RETR failed": 1,
        "RETR ok": 2,
        "STOR error": 1,
        "STOR refused": 1,
    }
