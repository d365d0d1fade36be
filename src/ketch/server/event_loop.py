"""Which event loop ``ketch serve`` runs on: asyncio's own, or uvloop when it is installed.

``event_loop = "auto"`` (the default) takes uvloop when it can be imported
(``pip install 'ketch[fast]'``) and asyncio's loop otherwise; ``"uvloop"``
insists on it and ``"asyncio"`` never uses it. The server uses nothing
uvloop lacks: the data path waits with ``add_reader``/``add_writer`` on
plain sockets, which both loops support.

``KETCH_EVENT_LOOP`` in the environment overrides the setting (the test
suite uses it to run the same tests on both loops).
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["EventLoopChoice", "EventLoopError", "current", "loop_factory", "resolve", "run"]

EventLoopChoice = Literal["auto", "asyncio", "uvloop"]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]
_T = TypeVar("_T")
_OVERRIDE = "KETCH_EVENT_LOOP"


class EventLoopError(Exception):
    """The configured event loop cannot be had; the text says what to do."""


def resolve(choice: str) -> Literal["asyncio", "uvloop"]:
    """The loop ``choice`` means on this machine (the environment may override it)."""
    override = os.environ.get(_OVERRIDE)
    # Messages name where the choice came from: an override is easily forgotten.
    if override:
        setting, fix = f"{_OVERRIDE} = {override!r} (in the environment)", f"unset {_OVERRIDE}"
        choice = override
    else:
        setting, fix = f"event_loop = {choice!r}", "set event_loop = 'auto'"
    if choice not in ("auto", "asyncio", "uvloop"):
        unset = f", or unset {_OVERRIDE}" if override else ""
        raise EventLoopError(
            f"{setting}: unknown event loop; use 'auto', 'asyncio' or 'uvloop'{unset}"
        )
    if choice == "asyncio":
        return "asyncio"
    try:
        importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise EventLoopError(
                f"{setting} but uvloop is not installed; install it "
                f"(pip install 'ketch[fast]') or {fix}"
            ) from None
        return "asyncio"
    return "uvloop"


def loop_factory(choice: str) -> LoopFactory | None:
    """What makes a new loop for ``choice``; None: asyncio's default."""
    if resolve(choice) == "asyncio":
        return None
    uvloop = importlib.import_module("uvloop")
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def current() -> str:
    """The name of the loop running now: "uvloop" or "asyncio"."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.split(".")[0] == "uvloop" else "asyncio"


def run(main: Coroutine[Any, Any, _T], choice: str) -> _T:
    """``asyncio.run(main)`` on the loop ``choice`` names."""
    try:
        factory = loop_factory(choice)
    except BaseException:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
