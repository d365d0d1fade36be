"""Receiving an upload: atomic replacement, the size limit, quotas and the upload rate.

STOR (without REST) and STOU are atomic when ``atomic_uploads`` is on (the
default): the data goes to a hidden temporary file that replaces the
target only when the transfer *completes*, meaning the client closed the
data connection cleanly and nothing failed. ABOR, a reset data connection,
a dropped control connection, a stall, a refused limit, a full disk or a
server shutdown all discard the temporary file and leave the old file as
it was (see :mod:`ketch.server.atomic_file`).

In stream mode the end of the data *is* the client closing the data
connection, so a client that stops early by closing it cleanly cannot be
told from one that finished: that upload is stored as complete, as with
every FTP server.

APPE and STOR after REST add to the existing file, so they write to it
directly; what arrived before a failure stays, which is what lets the
client resume.

The size limit and the quota are checked on every piece before it is
written (:func:`~ketch.server.transfers.receive_file`'s meter); an upload
that would go over stops with 552 and nothing of that piece stored. With
neither configured there is no meter.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from ketch.server.atomic_file import AtomicFile
from ketch.server.client_text import log_field
from ketch.server.data_channel import DataChannel
from ketch.server.quota import Quota
from ketch.server.throttle import Throttle
from ketch.server.transfers import TransferRefused, receive_file

if TYPE_CHECKING:
    from ketch.server.session import Session

__all__ = ["Upload", "open_unique_upload", "open_upload"]

log = logging.getLogger("ketch.server")


class Upload:
    """One upload from opening its file to commit or discard.

    Quota accounting: ``baseline`` is the size of the file the upload
    replaces or extends (already counted in the ledger). A direct upload's
    growth is real at once and charged as it is written. An atomic upload
    charges only what it adds beyond the old file's size while it runs
    (the old file stays until the end, but the quota is about what will be
    there); on commit the ledger gets the true difference, on discard all
    of its charges back.
    """

    def __init__(
        self,
        path: str,
        file: BinaryIO,
        *,
        atomic: AtomicFile | None,
        ascii: bool,
        base: int,
        baseline: int,
        max_size: int,
        quota: Quota | None,
        throttle: Throttle | None,
    ) -> None:
        self.path = path
        self._file = file
        self._atomic = atomic
        self._ascii = ascii
        self._base = base  # where writing starts: the offset (REST, APPE) or 0
        self._baseline = baseline
        self._written = 0
        self._max_size = max_size
        self._quota = quota
        self._throttle = throttle
        #: What this upload has charged to the ledger (bytes and files).
        self.charged_bytes = 0
        self.charged_files = 0
        self._committed = False
        self._closed = False
        #: Where a direct STOR cuts the file when its data starts (None: never). Not
        #: when opening: a transfer that gets no data connection must change nothing.
        self.cut_at: int | None = None
        #: Removes the file a direct upload created by opening it (None: it existed),
        #: should no data connection ever come: again, a 425 must change nothing.
        self.remove_created: Callable[[], None] | None = None
        self._ran = False

    # -- quota bookkeeping -------------------------------------------------------

    def start_charges(self, new_file: bool) -> None:
        """Record what opening did: a new file (its size changes only as data comes; a
        cut at the offset is charged when :meth:`run` makes it).

        The caller has checked the file count; for an atomic upload the new
        file is reserved until commit rather than real.
        """
        if self._quota is None:
            return
        if new_file:
            self._quota.adjust(0, 1)
            self.charged_files = 1

    def _charge_size(self, size: int) -> None:
        """Bring the ledger's charge for this upload in line with a file of ``size`` bytes."""
        assert self._quota is not None
        net = size - self._baseline
        if self._atomic is not None:
            net = max(0, net)  # the old file is only given back on commit
        growth = net - self.charged_bytes
        if growth > 0:
            self._quota.charge(growth, 0)
        else:
            self._quota.adjust(growth, 0)
        self.charged_bytes = net

    def _meter(self, count: int) -> None:
        size = self._base + self._written + count
        if self._max_size and size > self._max_size:
            kept = "nothing was stored" if self._atomic else "the part received so far was kept"
            raise TransferRefused(
                552,
                f"Transfer aborted: {self.path} would exceed the upload size limit of "
                f"{self._max_size} bytes; {kept}.",
            )
        if self._quota is not None:
            self._charge_size(size)
        self._written += count

    # -- the transfer ------------------------------------------------------------

    async def run(self, channel: DataChannel) -> None:
        """Receive until the client closes the data connection, then commit.

        On any failure (also cancellation) the upload is closed here, before
        the session replies, so a client that sees 426/451/552 finds the old
        file and no temporary one.
        """
        metered = bool(self._max_size) or self._quota is not None
        self._ran = True  # the data connection is there
        try:
            if self.cut_at is not None:
                self._cut(self.cut_at)
            await receive_file(
                channel,
                self._file,
                ascii=self._ascii,
                meter=self._meter if metered else None,
                throttle=self._throttle,
            )
            if self._atomic is not None:
                size, replaced = self._atomic.commit()
                self._committed = True
                if self._quota is not None:
                    self._quota.adjust(
                        size - (replaced or 0) - self.charged_bytes,
                        (0 if replaced is not None else 1) - self.charged_files,
                    )
        except BaseException:
            self.close()
            raise

    def _cut(self, offset: int) -> None:
        """Cut the file at the restart offset, now that data can flow (see ``cut_at``)."""
        fd = self._file.fileno()
        size = os.fstat(fd).st_size
        if size < offset:  # it shrank while the data connection was awaited
            raise TransferRefused(
                451,
                f"Transfer aborted: {self.path} shrank to {size} bytes, below the restart "
                f"offset {offset}, before the data arrived; nothing was written. "
                f"Send REST {size} (or less) and resume again.",
                result="changed",
            )
        os.ftruncate(fd, offset)
        if self._quota is not None:
            self._charge_size(offset)

    def close(self) -> None:
        """After the transfer, whatever happened: discard an uncommitted atomic upload."""
        if self._closed:
            return
        self._closed = True
        if self._atomic is None:
            if self.remove_created is not None and not self._ran:
                self._file.close()
                with contextlib.suppress(OSError):  # gone already: fine
                    self.remove_created()
                if self._quota is not None:
                    self._quota.adjust(-self.charged_bytes, -self.charged_files)
                return
            if self._quota is not None:
                # What is on disk, also after a short write (a full disk).
                with contextlib.suppress(OSError):
                    self._charge_true_size(os.fstat(self._file.fileno()).st_size)
            self._file.close()
            return
        if self._committed:
            return
        self._atomic.discard()
        log.debug("upload discarded path=%s: the old file is unchanged", log_field(self.path))
        if self._quota is not None:
            self._quota.adjust(-self.charged_bytes, -self.charged_files)

    def _charge_true_size(self, size: int) -> None:
        assert self._quota is not None
        self._quota.adjust(size - self._baseline - self.charged_bytes, 0)
        self.charged_bytes = size - self._baseline


async def open_upload(session: Session, path: str, *, offset: int, append: bool) -> Upload:
    """Open ``path`` for STOR (at ``offset``) or APPE, atomically where that applies.

    Raises FilesystemError (550; RestartOffsetError for an offset past the end) or
    QuotaExceeded (552) before anything is created.
    """
    fs = session.filesystem
    account = session.account
    assert account is not None  # transfer commands need a login
    quota = await session.context.quotas.quota_for(account)
    existing = fs.stat(path).size if fs.is_file(path) else None
    if quota is not None and existing is None:
        quota.check(0, 1)
    atomic = session.config.atomic_uploads and not append and offset == 0
    if atomic:
        target = fs.open_atomic_write(path)
        file, base = target.file, 0
    else:
        target = None
        # Cut at the offset only once the data connection is there (see Upload.run).
        file = fs.open_write(path, offset=offset, append=append, truncate=False)
        base = file.tell()
    upload = _make_upload(session, path, file, target, quota, base=base, baseline=existing or 0)
    upload.cut_at = None if append or atomic else base
    if existing is None and not atomic:
        upload.remove_created = functools.partial(fs.remove, path)
    upload.start_charges(new_file=existing is None)
    return upload


async def open_unique_upload(session: Session, directory: str, stem: str) -> Upload:
    """Open a new file with a unique name in ``directory`` for STOU (an empty placeholder
    reserves the name)."""
    fs = session.filesystem
    account = session.account
    assert account is not None
    quota = await session.context.quotas.quota_for(account)
    if quota is not None:
        quota.check(0, 1)
    path, file = fs.create_unique(directory, stem)
    target = None
    if session.config.atomic_uploads:
        file.close()
        try:
            target = fs.open_atomic_write(path, placeholder=True)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.remove(path)
            raise
        file = target.file
    upload = _make_upload(session, path, file, target, quota, base=0, baseline=0)
    upload.start_charges(new_file=True)
    return upload


def _make_upload(
    session: Session,
    path: str,
    file: BinaryIO,
    target: AtomicFile | None,
    quota: Quota | None,
    *,
    base: int,
    baseline: int,
) -> Upload:
    account = session.account
    assert account is not None
    return Upload(
        path,
        file,
        atomic=target,
        ascii=session.state.transfer_type == "A",
        base=base,
        baseline=baseline,
        max_size=session.config.max_upload_size,
        quota=quota,
        throttle=session.context.rates.throttle(account, "upload"),
    )
