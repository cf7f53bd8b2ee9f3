"""The Chunk Splitter's table without Faust: a `ChangelogTable` for `splitter_store.PagedStore`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from processors.chunk_splitter import SplitterState
from processors.splitter_store import PagedStore, is_page_key


class SplitterTable(dict[str, Any]):
    """Heads under stream ids, pages under page keys. Values go through JSON like Faust's codec;
    `written` counts the sentences of each `write` and `records` the table records written."""

    def __init__(self) -> None:
        super().__init__()
        self.store = PagedStore(self)
        self.written: list[int] = []
        self.records = 0
        self.partitions: dict[str, int] = {}
        """The changelog partition each key was last written to."""
        self._sentences = 0

    def put(self, partition: int, key: str, value: Any) -> None:
        self.records += 1
        self._sentences += len(value) if is_page_key(key) else len(value["tail"])
        self.partitions[key] = partition
        self[key] = json.loads(json.dumps(value))

    def remove(self, partition: int, key: str) -> None:
        self.records += 1
        self.partitions[key] = partition
        self.pop(key)

    def items(self) -> Iterable[tuple[str, Any]]:  # type: ignore[override]
        return list(super().items())

    def write(self, state: SplitterState, partition: int = 0) -> None:
        self._sentences = 0
        self.store.save(state, partition)
        self.written.append(self._sentences)

    def read(self, stream_id: str) -> SplitterState:
        state = self.store.load(stream_id)
        assert state is not None, f"no state stored for {stream_id}"
        return state
