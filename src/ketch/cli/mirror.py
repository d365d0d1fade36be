"""``ketch mirror URL DIR`` and ``ketch mirror --reverse DIR URL``: copy a tree.

The work is ketch.client.mirror's; this module turns options into a run and
its events into progress bars, status lines and the exit code (9 when some
files failed).
"""

from __future__ import annotations

import click
from rich.progress import TaskID

from ketch.cli.common import (
    EXIT_INCOMPLETE,
    EXIT_USAGE,
    ClientOptions,
    CommandFailed,
    client_options,
    display_for,
    run,
    target_for,
)
from ketch.cli.output import Display, amount, describe_transfer, write_out
from ketch.client import Client, ModeMemory, TransferResult
from ketch.client.mirror import MirrorEvents, MirrorResult, mirror_download, mirror_upload
from ketch.client.transfers import Progress

__all__ = ["mirror"]


@click.command()
@click.argument("source")
@click.argument("target")
@click.option(
    "-R", "--reverse", is_flag=True, help="Upload: mirror the local DIR to the server's URL."
)
@click.option(
    "-j",
    "--parallel",
    type=click.IntRange(1, 32),
    default=1,
    show_default=True,
    metavar="N",
    help="Transfer with N sessions at once.",
)
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
@click.option(
    "--verify",
    is_flag=True,
    help="Compare the server's hash of each transferred file with the local copy's; "
    "a difference fails that file.",
)
@client_options
def mirror(
    source: str,
    target: str,
    reverse: bool,
    parallel: int,
    dry_run: bool,
    verify: bool,
    options: ClientOptions,
) -> None:
    """Copy a directory tree: ketch mirror ftp://host/dir/ DIR (or --reverse DIR URL).

    \b
    Directories are created as needed and nothing is deleted. A file is
    skipped when it is up to date, compared no finer than the listing tells:
      download: same size and same time (each download gets the remote time);
      upload:   same size, and the remote time is not older than the local
                one (the same time, when the server can set it with MFMT).
    Exit code 9 when some files failed; each failure is one line on stderr.
    """
    url_text, local = (target, source) if reverse else (source, target)
    if not reverse and "://" in target and "://" not in source:
        raise CommandFailed(
            "to upload a local directory, add --reverse: ketch mirror --reverse DIR URL", EXIT_USAGE
        )
    remote = target_for(url_text, options)
    memory = ModeMemory()
    display = display_for(options)
    events = _Events(display, "put" if reverse else "get")

    def connect() -> Client:
        return remote.client(memory)

    async def work() -> int:
        with display:
            if reverse:
                result = await mirror_upload(
                    connect,
                    local,
                    remote.path,
                    parallel=parallel,
                    dry_run=dry_run,
                    events=events,
                    verify=verify,
                )
            else:
                result = await mirror_download(
                    connect,
                    remote.path,
                    local,
                    parallel=parallel,
                    dry_run=dry_run,
                    events=events,
                    verify=verify,
                )
        _report(result, display, "put" if reverse else "get", dry_run, verify)
        return EXIT_INCOMPLETE if result.failed else 0

    run(options, work)


def _report(result: MirrorResult, display: Display, verb: str, dry_run: bool, verify: bool) -> None:
    if dry_run:
        for directory in result.directories:
            write_out(f"mkdir {directory}")
        for path in result.planned:
            write_out(f"{verb} {path}")
        display.line(
            f"mirror (dry run): {len(result.planned)} to transfer, {result.skipped} skipped, "
            f"{len(result.directories)} directories to create"
        )
        return
    display.line(
        f"mirror: {result.transferred} transferred, {amount(result.bytes)}, "
        f"{result.skipped} skipped, {len(result.failed)} failed, "
        f"{len(result.directories)} directories created, {result.seconds:.2f} s"
        # A file whose hashes differ is among the failures, with both hashes.
        + ("; the transferred files' hashes match the server's" if verify else "")
    )


class _Events(MirrorEvents):
    """Progress bars (one for the whole run, one per file) and status lines."""

    def __init__(self, display: Display, verb: str) -> None:
        self.display = display
        self.verb = verb
        self.total: TaskID | None = None
        self.bars: dict[str, TaskID | None] = {}

    def ignored(self, path: str, reason: str) -> None:
        if self.display.verbose:
            self.display.line(f"ignored {path}: {reason}")

    def directory_created(self, path: str) -> None:
        if self.display.verbose:
            self.display.line(f"mkdir {path}")

    def planned(self, files: int, total_bytes: int) -> None:
        self.total = self.display.add_bar(f"mirror: {files} files", total_bytes)

    def started(self, path: str, size: int | None) -> Progress | None:
        task = self.display.add_bar(f"{self.verb} {path}", size)
        self.bars[path] = task
        if task is None:
            return None
        done_so_far = 0

        def progress(done: int, total: int | None) -> None:
            nonlocal done_so_far
            self.display.update_bar(task, done, total)
            self.display.advance_bar(self.total, done - done_so_far)
            done_so_far = done

        return progress

    def _end(self, path: str) -> None:
        self.display.remove_bar(self.bars.pop(path, None))

    def finished(self, path: str, result: TransferResult) -> None:
        self._end(path)
        self.display.line(describe_transfer(self.verb, path, result, verbose=self.display.verbose))

    def failed(self, path: str, message: str) -> None:
        self._end(path)
        self.display.error_line(f"ketch: {path}: {message}")
