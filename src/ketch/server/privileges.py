"""Giving up root after binding: the ``run_as`` setting.

A server started as root binds its listening socket (port 21 needs root),
starts the port-20 helper if active mode needs a low source port (see
:mod:`ketch.server.port20_helper`), and then becomes ``run_as`` for good:
supplementary groups cleared, then the group, then the user, in that order
(after setuid the process could no longer change its groups). Afterwards it
checks that it cannot become root again, and that the directories it serves
are usable by the user it now is.

Starting as root without ``run_as`` is allowed with a warning: it is how
``make run`` works in a root-only container or VM, and the jail still
confines every path to the account's home. Refusing would break that for
little gain, while the warning tells the admin what to set.
"""

from __future__ import annotations

import importlib
import logging
import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ketch.server.auth import Permission, parse_permissions
from ketch.server.tls import is_generated

if TYPE_CHECKING:
    from ketch.config import ServerConfig

__all__ = [
    "PrivilegeError",
    "RunAs",
    "access_problems",
    "access_problems_as",
    "drop_privileges",
    "refuse_unbindable_passive_ports",
    "resolve_run_as",
    "run_as_user",
    "warn_after_drop",
]

log = logging.getLogger("ketch.server")

#: Permissions that need write access to the home directory.
_WRITING = Permission.ALL & ~Permission.READ_ONLY

#: Modules the server first imports while serving (worker threads for password
#: checks and reloads, IDNA for resolving names). Imported before dropping root,
#: since run_as may not be able to read the Python installation (e.g. pyenv under
#: /root): an import failing later would break logins, not start-up.
_PRELOAD = ("concurrent.futures.thread", "encodings.idna")


class PrivilegeError(Exception):
    """The server cannot take on (or keep) the identity it was told to; the text says why."""


@dataclass(frozen=True)
class RunAs:
    """The unprivileged identity the server becomes after binding."""

    name: str
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"{self.name} (uid {self.uid}, gid {self.gid})"


def run_as_user(name: str) -> pwd.struct_passwd:
    """The password entry of ``run_as``; PrivilegeError saying what to do if there is none."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(
            f"run_as = {name!r}: no such user on this system; name an existing user "
            "(e.g. create one with `useradd --system --no-create-home ftp`)"
        ) from None


def resolve_run_as(name: str | None) -> RunAs | None:
    """Look ``run_as`` up and check it fits who started the server; None: stay as we are.

    Called before anything is bound, so a mistake costs nothing.
    """
    euid = os.geteuid()
    if name is None:
        if euid == 0:
            log.warning(
                "running as root without run_as: every session works with root's rights "
                'on the file system; set run_as (e.g. run_as = "ftp") to drop them right '
                "after the ports are bound"
            )
        return None
    entry = run_as_user(name)
    if euid != 0:
        raise PrivilegeError(
            f"run_as = {name!r} needs the server to be started as root, but it runs as "
            f"{_user_name(euid)}; start it as root (it drops to {name} after binding), "
            "or leave run_as out"
        )
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise PrivilegeError(
            f"run_as = {name!r} has user or group id 0 (root): dropping to it keeps root's "
            "rights; name an unprivileged user"
        )
    return RunAs(name, entry.pw_uid, entry.pw_gid)


def drop_privileges(target: RunAs) -> None:
    """Become ``target`` for good (groups, then gid, then uid), and prove it stuck."""
    for module in _PRELOAD:
        importlib.import_module(module)
    try:
        os.setgroups([])
        os.setgid(target.gid)
        os.setuid(target.uid)
    except OSError as error:
        raise PrivilegeError(
            f"cannot switch to run_as {target}: {error.strerror or error}"
        ) from None
    _verify_dropped(target)
    log.info("running as %s from now on; root rights dropped", target)


def _verify_dropped(target: RunAs) -> None:
    """Refuse to serve if any id is still root or root could be regained."""
    uids, gids = os.getresuid(), os.getresgid()
    if uids != (target.uid,) * 3 or gids != (target.gid,) * 3:
        raise PrivilegeError(
            f"after switching to {target} the ids are uid {uids}, gid {gids}; refusing to serve"
        )
    if os.getgroups() not in ([], [target.gid]):
        raise PrivilegeError(
            f"after switching to {target} supplementary groups remain: {os.getgroups()}"
        )
    for regain in (os.setuid, os.seteuid, os.setgid, os.setegid):
        try:
            regain(0)
        except PermissionError:
            continue
        raise PrivilegeError(
            f"{regain.__name__}(0) succeeded after switching to {target}; refusing to serve"
        )
    capabilities = _capabilities()
    if any(capabilities.values()):
        held = ", ".join(f"{name} {value:#x}" for name, value in capabilities.items() if value)
        raise PrivilegeError(f"capabilities remain after switching to {target}: {held}")


def _capabilities() -> dict[str, int]:
    """The permitted, effective and ambient capability sets (Linux; empty elsewhere)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    sets = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("CapPrm", "CapEff", "CapAmb"):
            sets[name] = int(value.strip(), 16)
    return sets


def access_problems(config: ServerConfig, user: str, config_file: Path | None = None) -> list[str]:
    """What the current identity cannot do with the configured directories, one line each.

    Meant to run after :func:`drop_privileges`: ``os.access`` checks the real
    ids, which are then the ``run_as`` user's.
    """
    directories: list[tuple[str, Path, bool]] = []
    if config.anonymous_enabled():
        key = "root" if config.anonymous.home is None else "anonymous.home"
        writes = bool(parse_permissions(config.anonymous.permissions) & _WRITING)
        directories.append((f"{key} (anonymous)", config.anonymous_home(), writes))
    for index, account in enumerate(config.users):
        writes = bool(parse_permissions(account.permissions) & _WRITING)
        directories.append((f"users[{index}].home ({account.name})", account.home, writes))

    problems = []
    for what, path, writes in directories:
        if not os.access(path, os.R_OK | os.X_OK):
            problems.append(
                f"{what} {path}: {user} cannot read it, so logins there will fail; give "
                f"{user} read and search permission (chmod o+rx, or chgrp to its group)"
            )
        elif writes and not os.access(path, os.W_OK):
            problems.append(
                f"{what} {path}: the account may write but {user} cannot, so uploads will "
                f"fail; give {user} write permission (chown, or chgrp and chmod g+w)"
            )
    if config_file is not None and not os.access(config_file, os.R_OK):
        problems.append(
            f"{config_file}: {user} cannot read it, so SIGHUP cannot reload it; make it "
            f"readable to {user} (e.g. chgrp to its group and chmod g+r)"
        )
    # Reloads do not read the pair --tls generated again: root's alone is as it should be.
    generated = config.tls_certificate is not None and is_generated(
        config.tls_certificate, config.tls_key
    )
    for key in ("tls_certificate", "tls_key"):
        path = getattr(config, key)
        if path is not None and not generated and not os.access(path, os.R_OK):
            # Loaded once as root, the files are read again by every reload (SIGHUP).
            problems.append(
                f"{key} {path}: {user} cannot read it, so every SIGHUP reload will be "
                f"refused; make it readable to {user} (e.g. chgrp to its group and "
                "chmod g+r), or restart to apply changes"
            )
    return problems


def access_problems_as(
    config: ServerConfig, name: str, config_file: Path | None = None
) -> list[str] | None:
    """:func:`access_problems` for the user ``name``, as the server would find them after
    dropping root; None when this process cannot take on that user (it is not root).

    For `ketch config check`, which must not give up root itself: a child process does,
    as :func:`drop_privileges` would (no supplementary groups), and reports back.
    """
    entry = run_as_user(name)
    if os.geteuid() == entry.pw_uid:
        return access_problems(config, name, config_file)
    if os.geteuid() != 0:
        return None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the user, check, report, exit
        _report_access_problems_as(entry, config, config_file, read_end, write_end)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read().decode("utf-8", "surrogateescape")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise PrivilegeError(
            f"cannot check what run_as {name!r} may read: switching to that user failed; "
            "check that the user's uid and gid are valid"
        )
    return report.split("\0") if report else []


def _report_access_problems_as(
    entry: pwd.struct_passwd,
    config: ServerConfig,
    config_file: Path | None,
    read_end: int,
    write_end: int,
) -> NoReturn:
    """In a forked child: write the access problems of ``entry`` to ``write_end``, exit."""
    status = 1
    try:
        os.close(read_end)
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
        problems = access_problems(config, entry.pw_name, config_file)
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write("\0".join(problems).encode("utf-8", "surrogateescape"))
        status = 0
    finally:
        os._exit(status)  # never back into the parent's code, whatever happened


def warn_after_drop(config: ServerConfig, target: RunAs, config_file: Path | None) -> None:
    """Log what the dropped identity will trip over: unreadable homes, low passive ports."""
    for problem in access_problems(config, target.name, config_file):
        log.warning("%s", problem)


def refuse_unbindable_passive_ports(config: ServerConfig) -> None:
    """PrivilegeError when ``run_as`` could not bind the passive range once root is dropped.

    Passive listeners are bound per transfer, after the drop: every PASV and EPSV
    would fail. Checked before anything is bound; the kernel's limit is read, since
    containers often lower it to 0.
    """
    lowest = _unprivileged_port_start()
    if config.run_as is not None and config.passive_ports.low < lowest:
        raise PrivilegeError(
            f"passive_ports {config.passive_ports} starts below {lowest}, the lowest port "
            f"{config.run_as} may bind once root is dropped (run_as), so every PASV and EPSV "
            f"would fail; use a range from {lowest} up, e.g. 50000-50999"
        )


def _unprivileged_port_start() -> int:
    try:
        return int(Path(_UNPRIVILEGED_PORT_START).read_text())
    except (OSError, ValueError):  # not Linux, or a kernel before 4.11
        return 1024


_UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


def _user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
