"""Big listings are made in a listing thread, small ones inline (ketch.server.listing_threads)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ketch.server.listing_threads import BIG_DIRECTORY, make_listing


def test_a_big_directory_is_listed_while_the_event_loop_goes_on() -> None:
    async def scenario() -> str:
        loop_ran = threading.Event()

        def make() -> str:
            # Set by a coroutine on the loop: this would wait in vain if make() held the loop.
            assert loop_ran.wait(10), "the event loop did not run while the listing was made"
            return threading.current_thread().name

        listing = asyncio.ensure_future(make_listing(make, BIG_DIRECTORY + 1))
        await asyncio.sleep(0)  # the listing starts; made inline, it would block right here
        loop_ran.set()
        return await asyncio.wait_for(listing, 10)

    assert asyncio.run(scenario()).startswith("ketch-listing")


@pytest.mark.parametrize("size", [0, 4096, BIG_DIRECTORY])
def test_a_small_directory_is_listed_inline(size: int) -> None:
    def on_this_thread() -> bool:
        return threading.current_thread() is threading.main_thread()

    async def scenario() -> bool:
        return await make_listing(on_this_thread, size)

    assert asyncio.run(scenario())


def test_errors_of_a_threaded_listing_reach_the_caller() -> None:
    def make() -> str:
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError, match="gone"):
        asyncio.run(make_listing(make, BIG_DIRECTORY + 1))
