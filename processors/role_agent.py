"""The agent shell every role after the Chunk Splitter shares (spec section 3).

A role module keeps its pure logic (prompt, schema, parser) on top and, at the bottom, one async
`process(worker, record)` that reads its input record and sends its output; `register_role` turns
that into a Faust agent on the role's input topic, under the worker's error policy. When a record
is dead-lettered, the chunk it carries is released: a ChunkDone with no carry-over goes back to
the splitter, so the stream moves on instead of waiting for that chunk forever. A gold canary's
record (processors/canaries.py) that fails is dropped: no dead letter, nothing to release.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust

from processors.chunk_splitter import chunk_done
from processors.evidence import is_canary
from processors.worker import Record, WorkerContext

RoleProcess = Callable[[WorkerContext, Record], Awaitable[None]]


def carried_chunk(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The chunk a RoleResult carries."""
    return record["chunk"]  # type: ignore[no-any-return]


def register_role(
    worker: WorkerContext,
    role: str,
    source: str,
    record_type: str,
    process: RoleProcess,
    chunk_of: Callable[[Mapping[str, Any]], Mapping[str, Any]] = carried_chunk,
) -> None:
    """Add the agent of `role`: each `record_type` record of topic `source` goes to `process`."""

    async def run(record: Record) -> None:
        await process(worker, record)

    async def release(record: Record) -> None:
        chunk = chunk_of(record)
        await worker.send(worker.topics.progress, str(chunk["stream_id"]), "ChunkDone", chunk_done(chunk))

    def canary(record: Record) -> bool:
        try:
            return is_canary(str(chunk_of(record)["stream_id"]))
        except (KeyError, TypeError):
            return False

    async def agent(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await worker.handle(event, role, record_type, run, on_failure=release, quiet=canary)

    agent.__name__ = agent.__qualname__ = role  # Faust names the agent's tasks after the function
    worker.app.agent(worker.source(source), name=role, concurrency=worker.settings.worker_concurrency)(agent)
