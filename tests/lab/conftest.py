"""Fixtures for lab tests: network namespaces built and destroyed per test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from netns import NetNamespace, unavailable_reason


@pytest.fixture
def make_netns() -> Iterator[Callable[[str], NetNamespace]]:
    """Create namespaces with ``make_netns("label")``; all are deleted after the test."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") and os.geteuid() == 0:
            pytest.fail(reason)  # make test installs the tools; missing ones are a defect
        pytest.skip(reason)
    with ExitStack() as stack:
        yield lambda label: stack.enter_context(NetNamespace(label))
