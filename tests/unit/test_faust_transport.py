"""The worker's table-write buffer: a flush before an offset commit must wait for every write.

The channel below stands in for a broker that acknowledges each record 0.25 s after it was sent
(one changelog record per request on a loaded Tansu); the buffer, its sending task and the
futures are Faust's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import faust
import pytest
from faust.exceptions import ProducerSendError
from faust.transport.producer import ProducerBuffer
from faust.types.tuples import FutureMessage, PendingMessage

from olp.faust_transport import _ProducerBuffer

ACK_DELAY_S = 0.25


class SlowBroker:
    """A channel whose records are acknowledged ACK_DELAY_S after they are sent, or fail."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.sent = 0

    async def publish_message(self, fut: FutureMessage, wait: bool = False) -> None:
        self.sent += 1
        loop = asyncio.get_running_loop()
        if self.fail:
            loop.call_later(ACK_DELAY_S, fut.set_exception, ConnectionError("broker gone"))
        else:
            loop.call_later(ACK_DELAY_S, fut.set_result, None)


def table_write(channel: SlowBroker) -> FutureMessage:
    return FutureMessage(PendingMessage(channel, b"k", b"v", 0, None, None, None, None, None))  # type: ignore[arg-type]


@pytest.fixture
async def app() -> AsyncIterator[faust.App]:
    yield faust.App("test-transport", broker="memory://")


async def started(buffer: ProducerBuffer, app: faust.App) -> ProducerBuffer:
    buffer.app = app
    await buffer.start()
    return buffer


async def test_faust_flush_returns_with_writes_unacknowledged(app: faust.App) -> None:
    """The bug being worked around: Faust's flush gives up after 0.1 s without a sent record."""
    buffer = await started(ProducerBuffer(), app)
    writes = [table_write(SlowBroker()) for _ in range(3)]
    for fut in writes:
        buffer.put(fut)
    await buffer.flush()
    assert not all(f.done() for f in writes)
    await asyncio.wait(writes, timeout=2)
    await buffer.stop()


async def test_flush_waits_until_every_write_is_acknowledged(app: faust.App) -> None:
    buffer = await started(_ProducerBuffer(), app)
    broker = SlowBroker()
    writes = [table_write(broker) for _ in range(3)]
    for fut in writes:
        buffer.put(fut)
    await asyncio.wait_for(buffer.flush(), 5)
    assert all(f.done() and f.exception() is None for f in writes)
    assert broker.sent == 3
    await buffer.stop()


async def test_flush_fails_when_a_write_failed(app: faust.App) -> None:
    """A failed write must stop the commit: the events that made it are processed again."""
    buffer = await started(_ProducerBuffer(), app)
    buffer.put(table_write(SlowBroker(fail=True)))
    with pytest.raises(ProducerSendError, match="broker gone"):
        await asyncio.wait_for(buffer.flush(), 5)
    await buffer.stop()


async def test_flush_when_stopping_sends_what_is_still_queued(app: faust.App) -> None:
    buffer = await started(_ProducerBuffer(), app)
    await buffer.stop()  # the sending task has ended
    broker = SlowBroker()
    writes = [table_write(broker) for _ in range(2)]
    for fut in writes:
        buffer.put(fut)
    await asyncio.wait_for(buffer.flush(), 5)
    assert all(f.done() for f in writes) and broker.sent == 2

