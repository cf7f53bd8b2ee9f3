"""When segments go out (file/tail adapter): paced at their recorded timestamps, and
read from a file that is still being written (`tail -f` of an ASR's output).

Clock and sleep are parameters, so tests run without waiting.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from olp.errors import FeedError

S = TypeVar("S", bound=Mapping[str, Any])


def due_offsets_s(ts_ms: Iterable[int], speed: float = 1.0) -> list[float]:
    """Seconds after the first segment at which each segment is due (never negative)."""
    if speed <= 0:
        raise FeedError(f"replay speed must be positive, got {speed}")
    stamps = list(ts_ms)
    if not stamps:
        return []
    first = stamps[0]
    return [max(0.0, (ts - first) / 1000 / speed) for ts in stamps]


def paced(
    segments: Iterable[S],
    speed: float = 1.0,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[S]:
    """Yield each segment when its `ts_ms` is due, relative to the first one, `speed` times as
    fast as recorded. A segment stamped earlier than the first goes out at once."""
    if speed <= 0:
        raise FeedError(f"replay speed must be positive, got {speed}")
    started: float | None = None
    first_ts = 0
    for segment in segments:
        if started is None:
            started, first_ts = clock(), int(segment["ts_ms"])
        wait = started + (int(segment["ts_ms"]) - first_ts) / 1000 / speed - clock()
        if wait > 0:
            sleep(wait)
        yield segment


def follow_lines(
    path: Path,
    *,
    stop: Callable[[], bool] = lambda: False,
    poll_s: float = 0.25,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[tuple[int, str]]:
    """Numbered complete lines of `path`, then of whatever is appended, until `stop()` is true
    while no new line is there. A last line without a line break is yielded when stopping."""
    line_no = 0
    partial = ""
    with Path(path).open(encoding="utf-8", newline="") as handle:
        while True:
            chunk = handle.readline()
            if chunk:
                partial += chunk
                if partial.endswith("\n"):
                    line_no += 1
                    yield line_no, partial.rstrip("\r\n").removeprefix("\ufeff" if line_no == 1 else "")
                    partial = ""
                continue
            if os.fstat(handle.fileno()).st_size < handle.tell():
                raise FeedError(f"{path} was truncated while being followed")
            if stop():
                if partial.strip():
                    yield line_no + 1, partial.rstrip("\r\n")
                return
            sleep(poll_s)
