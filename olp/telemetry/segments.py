"""One segment, one trace, through the Chunk Splitter.

The splitter batches K segments into one chunk, and a span has one parent. Decision: a chunk's
trace continues the trace of the segment that *completed* it (the chunk's newest sentence that
this chunk carries for the first time); the chunk's emit span links to the other new segments'
contexts (and to the record that released it, e.g. the previous chunk's ChunkDone). So the trace
started by ingesting a segment holds its splitter span and, for the completing segment, every
role, every LLM call, the feedback and the policy update it caused; the other segments' traces
are reachable over links. The segment contexts are kept in memory per worker (`SegmentTraces`,
bounded); after a restart or rebalance a chunk whose segments another process saw simply
continues the current context.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind

from olp.telemetry.propagation import context_of

log = logging.getLogger("olp.telemetry")
_tracer = trace.get_tracer("olp")


class SegmentTraces:
    """Remembers the span context under which each segment reached the splitter (bounded)."""

    def __init__(self, max_segments: int = 20_000, max_links: int = 64) -> None:
        self._contexts: OrderedDict[tuple[str, int], SpanContext] = OrderedDict()
        self._max = max_segments
        self._max_links = max_links

    def __len__(self) -> int:
        return len(self._contexts)

    def remember(self, stream_id: str, segment_id: int, span_context: SpanContext) -> None:
        if not span_context.is_valid:
            return  # tracing off: nothing to continue
        key = (str(stream_id), int(segment_id))
        self._contexts[key] = span_context
        self._contexts.move_to_end(key)
        while len(self._contexts) > self._max:
            self._contexts.popitem(last=False)

    def take(self, chunk: Mapping[str, Any]) -> tuple[SpanContext | None, list[Link]]:
        """(parent, links) for a chunk: the newest segment it carries for the first time is the
        parent, the other first-time segments are links. Each segment is used once."""
        if not self._contexts:
            return None, []
        stream = str(chunk["stream_id"])
        found = [
            (int(s["id"]), sc)
            for s in chunk["sentences"]
            if (sc := self._contexts.pop((stream, int(s["id"])), None)) is not None
        ]
        if not found:
            return None, []
        found.sort(key=lambda item: item[0])
        parent = found[-1][1]
        links = [Link(sc, {"olp.segment_id": sid}) for sid, sc in found[:-1]][-self._max_links :]
        return parent, links

    @contextlib.contextmanager
    def chunk_span(self, chunk: Mapping[str, Any]) -> Iterator[None]:
        """Around sending a chunk: continue the completing segment's trace (module docstring)."""
        try:
            parent, links = self.take(chunk)
            current = trace.get_current_span().get_span_context()
            if parent is None:
                ctx = None
            else:
                ctx = context_of(parent)
                if current.is_valid and current.trace_id != parent.trace_id:
                    links.append(Link(current, {"olp.link": "released_by"}))
            span_cm: contextlib.AbstractContextManager[Any] = _tracer.start_as_current_span(
                "chunk_splitter emit",
                context=ctx,
                kind=SpanKind.INTERNAL,
                links=links,
                attributes={
                    "olp.stream_id": str(chunk["stream_id"]),
                    "olp.chunk_id": str(chunk["chunk_id"]),
                    "olp.chunk.sentences": len(chunk["sentences"]),
                    "olp.chunk.linked_segments": len(links),
                },
            )
        except Exception as exc:
            log.debug("telemetry: chunk span failed: %s", exc)
            span_cm = contextlib.nullcontext()
        with span_cm:
            yield
