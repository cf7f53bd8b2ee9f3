"""The Chunk Splitter's stored form: one `SplitterState` per stream in a changelogged Faust table
(spec section 3, "Chunk Splitter"; spec section 6: a restarted worker resumes every stream).

A stream is stored as a head under its stream id and the earlier part of its buffer in pages under
`page_key`s. The head is `SplitterState.to_dict()` plus the buffer's `first_id` and `last_id`, its
last page inline (`tail`), the numbers of its earlier `pages` and the source `partition`. A page is
written once, when the buffer moves past it (ids only grow, so it is then complete), so a write
encodes at most a page plus the new sentences even for a stream far behind: re-encoding a long
backlog on every write would cost more than the stream itself. Pages go out before the head, on the
same changelog partition, so a head is only ever read with the pages written before it; after a
crash between the two, a page may hold sentences past the head's `last_id`, which are not part of
it (their segments are replayed: the head's `max_id` is older).

`state_writes` and `restore_state` are pure; `PagedStore` applies them to a table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from olp.errors import ValidationError
from processors.chunk_splitter import SplitterState
from processors.domain import Sentence

PAGE_SIZE = 64
"""Sentence ids per stored page of a buffer (page = id // PAGE_SIZE)."""
PAGE_SEPARATOR = "\x1f"
"""Between the stream id and the page number in a page's table key (stream ids may not hold it)."""


@dataclass(frozen=True, slots=True)
class StateWrites:
    """What to write to the table for one stream: `pages` first, then the `head`."""

    head: dict[str, Any]
    pages: dict[int, list[list[Any]]]
    """Page number -> its sentences as [id, text] pairs."""
    deleted: tuple[int, ...]
    """Stored pages holding only sentences that left the buffer."""


def page_key(stream_id: str, page: int) -> str:
    return f"{stream_id}{PAGE_SEPARATOR}{page}"


def is_page_key(key: str) -> bool:
    return PAGE_SEPARATOR in key


def state_writes(state: SplitterState, stored: Mapping[str, Any] | None) -> StateWrites:
    """The table writes that turn the `stored` head (None: nothing stored) into `state`."""
    buffer = state.buffer
    old_pages = set(stored.get("pages", ())) if stored is not None else set()
    tail_page = buffer[-1].id // PAGE_SIZE if buffer else None
    # The buffer from its last page backwards: the tail, then every page not stored yet (the
    # stored ones are complete and unchanged: a buffer only loses sentences at its start).
    split = len(buffer)
    while split > 0 and buffer[split - 1].id // PAGE_SIZE == tail_page:
        split -= 1
    pages: dict[int, list[list[Any]]] = {}
    i = split
    while i > 0 and buffer[i - 1].id // PAGE_SIZE not in old_pages:
        i -= 1
    for sentence in buffer[i:split]:
        pages.setdefault(sentence.id // PAGE_SIZE, []).append([sentence.id, sentence.text])
    first_page = buffer[0].id // PAGE_SIZE if buffer else None
    kept = {p for p in old_pages if first_page is not None and p >= first_page and p != tail_page}
    head = state.to_dict()
    head["first_id"] = buffer[0].id if buffer else None
    head["last_id"] = buffer[-1].id if buffer else None
    head["pages"] = sorted(kept | set(pages))
    head["tail"] = [[s.id, s.text] for s in buffer[split:]]
    deleted = tuple(sorted(old_pages - kept - set(pages)))
    return StateWrites(head=head, pages=pages, deleted=deleted)


def restore_state(head: Mapping[str, Any], read_page: Callable[[int], Any]) -> SplitterState:
    """The state a stored head and its pages (`read_page(page)`, None when absent) describe."""
    try:
        first, last = _opt_int(head["first_id"]), _opt_int(head["last_id"])
        stored: list[Any] = []
        for page in head["pages"]:
            sentences = read_page(int(page))
            if sentences is None:
                raise ValidationError(f"splitter state of {head['stream_id']!r} misses page {page}")
            stored.extend(sentences)
        stored.extend(head["tail"])
        buffer = [
            Sentence(int(sentence_id), str(text))
            for sentence_id, text in stored
            if first is not None and last is not None and first <= int(sentence_id) <= last
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValidationError(f"corrupt splitter state: {exc!r}") from exc
    if (buffer[0].id, buffer[-1].id) != (first, last) if buffer else first is not None:
        raise ValidationError(
            f"splitter state of {head.get('stream_id')!r}: its pages hold "
            f"{len(buffer)} sentences, not {first}..{last}"
        )
    return SplitterState.from_dict(head, buffer)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


class ChangelogTable(Protocol):
    """The table as the store uses it: reads, and writes to an explicit changelog partition."""

    def get(self, key: str) -> Any: ...

    def items(self) -> Iterable[tuple[str, Any]]: ...

    def put(self, partition: int, key: str, value: Any) -> None: ...

    def remove(self, partition: int, key: str) -> None: ...


class FaustTable:
    """A Faust table written through its public `send_changelog`, to the partition of the
    stream's source events. A plain `table[key] = value` takes the partition from Faust's current
    event, which the splitter's batch loop and its timer do not have."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, key: str) -> Any:
        return self._table.get(key)

    def items(self) -> Iterable[tuple[str, Any]]:
        return list(self._table.items())

    def put(self, partition: int, key: str, value: Any) -> None:
        self._table.send_changelog(partition, key, value)
        self._table.data[key] = value

    def remove(self, partition: int, key: str) -> None:
        self._table.send_changelog(partition, key, None, value_serializer="raw")
        self._table.data.pop(key, None)


class PagedStore:
    """Every stream's `SplitterState` in a table, as heads and pages (module docstring)."""

    def __init__(self, table: ChangelogTable) -> None:
        self.table = table
        self._decoded: dict[str, tuple[Any, SplitterState]] = {}
        """stream_id -> (the head this store wrote, its state): no restoring while it stands."""

    def load(self, stream_id: str) -> SplitterState | None:
        """The stream's state, None when none is stored."""
        if is_page_key(stream_id):
            raise ValidationError(f"stream id {stream_id!r} holds the control character U+001F")
        head = self.table.get(stream_id)
        return None if head is None else self.restore(stream_id, head)

    def restore(self, stream_id: str, head: Mapping[str, Any]) -> SplitterState:
        known = self._decoded.get(stream_id)
        if known is not None and known[0] is head:  # a table recovered from its changelog holds other objects
            return known[1]
        return restore_state(head, lambda page: self.table.get(page_key(stream_id, page)))

    def save(self, state: SplitterState, partition: int) -> None:
        """Write `state`, its pages first, on the changelog partition of the stream's events."""
        writes = state_writes(state, self.table.get(state.stream_id))
        for page, sentences in writes.pages.items():
            self.table.put(partition, page_key(state.stream_id, page), sentences)
        for page in writes.deleted:
            self.table.remove(partition, page_key(state.stream_id, page))
        head = {**writes.head, "partition": partition}
        self.table.put(partition, state.stream_id, head)
        self._decoded[state.stream_id] = (head, state)

    def delete(self, stream_id: str) -> None:
        """Forget the stream: its pages, then its head."""
        head = self.table.get(stream_id)
        self._decoded.pop(stream_id, None)
        if head is None:
            return
        partition = int(head["partition"])
        for page in head.get("pages", ()):
            self.table.remove(partition, page_key(stream_id, int(page)))
        self.table.remove(partition, stream_id)

    def forget(self, stream_id: str) -> None:
        """Drop the decoded copy of a stream this worker no longer writes (it stays stored)."""
        self._decoded.pop(stream_id, None)

    def heads(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """(stream id, head) of every stored stream."""
        for key, value in self.table.items():
            if not is_page_key(key) and value is not None:
                yield key, value
