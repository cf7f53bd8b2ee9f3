"""The Chunk Splitter's Faust table as its agent shell uses it, without Faust (chunk_splitter.py)."""

from __future__ import annotations

import json
from typing import Any

from processors import chunk_splitter as cs


class SplitterTable(dict[str, Any]):
    """Heads under stream ids, pages under page keys. Values go through JSON like Faust's codec;
    `written` counts the sentences of each write and `records` the table records written."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[int] = []
        self.records = 0

    def write(self, state: cs.SplitterState) -> None:
        writes = cs.state_writes(state, self.get(state.stream_id))
        self.written.append(sum(len(p) for p in writes.pages.values()) + len(writes.head["tail"]))
        self.records += 1 + len(writes.pages) + len(writes.deleted)
        for page, sentences in writes.pages.items():
            self[cs.page_key(state.stream_id, page)] = json.loads(json.dumps(sentences))
        for page in writes.deleted:
            self.pop(cs.page_key(state.stream_id, page))
        self[state.stream_id] = json.loads(json.dumps(writes.head))

    def read(self, stream_id: str) -> cs.SplitterState:
        return cs.restore_state(self[stream_id], lambda page: self.get(cs.page_key(stream_id, page)))
