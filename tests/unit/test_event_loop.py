"""event_loop = "auto" | "asyncio" | "uvloop", and the KETCH_EVENT_LOOP override."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import pytest

from ketch.config import ConfigError, load_config
from ketch.server import event_loop
from ketch.server.event_loop import EventLoopError, resolve

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KETCH_EVENT_LOOP", raising=False)


def without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes every import of it fail, as when it is not installed.
    monkeypatch.setitem(sys.modules, "uvloop", None)


def test_the_default_is_auto() -> None:
    assert load_config(None, {}).event_loop == "auto"
    with pytest.raises(ConfigError, match="event_loop"):
        load_config(None, {"event_loop": "trio"})


def test_asyncio_is_asyncio() -> None:
    assert resolve("asyncio") == "asyncio"
    assert event_loop.loop_factory("asyncio") is None


def test_auto_takes_uvloop_only_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve("auto") == ("uvloop" if HAVE_UVLOOP else "asyncio")
    without_uvloop(monkeypatch)
    assert resolve("auto") == "asyncio"


def test_uvloop_without_uvloop_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    without_uvloop(monkeypatch)
    with pytest.raises(EventLoopError, match=r"pip install 'ketch\[fast\]'"):
        resolve("uvloop")


def test_the_environment_overrides_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETCH_EVENT_LOOP", "asyncio")
    assert resolve("uvloop") == "asyncio"
    monkeypatch.setenv("KETCH_EVENT_LOOP", "nonsense")
    with pytest.raises(EventLoopError, match="unknown"):
        resolve("auto")


def test_an_unknown_override_names_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KETCH_EVENT_LOOP", "foo")
    with pytest.raises(EventLoopError) as refused:
        resolve("auto")
    assert str(refused.value) == (
        "KETCH_EVENT_LOOP = 'foo' (in the environment): unknown event loop; "
        "use 'auto', 'asyncio' or 'uvloop', or unset KETCH_EVENT_LOOP"
    )


def test_a_missing_uvloop_names_where_it_was_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    without_uvloop(monkeypatch)
    with pytest.raises(EventLoopError, match=r"^event_loop = 'uvloop' but .* set event_loop"):
        resolve("uvloop")
    monkeypatch.setenv("KETCH_EVENT_LOOP", "uvloop")
    with pytest.raises(
        EventLoopError,
        match=r"^KETCH_EVENT_LOOP = 'uvloop' \(in the environment\) but .* unset KETCH_EVENT_LOOP$",
    ):
        resolve("auto")


@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_run_runs_on_the_chosen_loop(choice: str) -> None:
    if choice == "uvloop" and not HAVE_UVLOOP:
        pytest.skip("uvloop is not installed")

    async def which() -> tuple[str, str]:
        return type(asyncio.get_running_loop()).__module__, event_loop.current()

    module, name = event_loop.run(which(), choice)
    assert module.startswith("uvloop") == (choice == "uvloop")
    assert name == choice


def test_a_loop_that_cannot_be_had_closes_the_coroutine(monkeypatch: pytest.MonkeyPatch) -> None:
    without_uvloop(monkeypatch)

    async def never() -> None:
        raise AssertionError("must not run")

    coroutine = never()
    with pytest.raises(EventLoopError):
        event_loop.run(coroutine, "uvloop")
    assert coroutine.cr_frame is None  # closed: no "never awaited" warning
