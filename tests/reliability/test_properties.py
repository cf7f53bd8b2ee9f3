"""Property-based tests ("bad input"): the codec and every parser of untrusted input,
thousands of generated cases each, must either return a well-formed value or raise the project's
error for that input (CodecError, ParseError, ValidationError, FeedError, ModelCallError), never
anything else. Plus the invariants the Chunk Splitter's at-least-once story rests on.

The number of cases per property is HYPOTHESIS_CASES (default 300), so CI and `make reliability`
can trade time for depth; the suite's table reports the total.
"""

from __future__ import annotations

import json
import os
import string
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from olp.catalog import ModelSpec
from olp.errors import CodecError, FeedError, ModelCallError, ParseError, ValidationError
from processors import chunk_splitter as cs
from processors import content_organizer, relationship_checker, topic_finder, topic_locator
from processors import splitter_store as store
from processors.domain import Sentence, TopicSpan, as_int, extract_json, render_transcript
from processors.format_checker import check_document
from processors.model_gateway import _parse_completion
from schemas.codec import RECORD_TYPES, contract, make_codec
from tests.reliability.conftest import Report
from tests.support.splitter_table import SplitterTable

pytestmark = pytest.mark.reliability

CASES = int(os.environ.get("HYPOTHESIS_CASES", "300"))


def cases(share: float = 1.0) -> Any:
    """Hypothesis settings for `share` of CASES examples (properties with costly inputs run fewer)."""
    return settings(
        max_examples=max(10, int(CASES * share)),
        deadline=None,
        derandomize=True,  # the same cases on every run: a CI failure reproduces locally
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


PROFILE = cases()
HEAVY = cases(0.5)
RAN: dict[str, int] = {}
"""Cases run per property (counted by the properties themselves), for the table."""


CRASHED: set[str] = set()
"""Properties that saw an exception other than the project's error for bad input."""
_current = [""]


def count(name: str) -> None:
    RAN[name] = RAN.get(name, 0) + 1
    _current[0] = name


@pytest.fixture(scope="module", autouse=True)
def _report(report: Report) -> Iterator[None]:
    started = time.monotonic()
    yield
    report.add(
        "property-based (hypothesis)",
        f"{len(RAN)} properties, {sum(RAN.values())} cases",
        None,
        None,
        len(CRASHED),
        None,
        f"codec + every parser; {time.monotonic() - started:.0f}s; crash = any other exception"
        + (f" ({', '.join(sorted(CRASHED))})" if CRASHED else ""),
    )


# --- strategies -------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)
KEYS = st.sampled_from(
    [
        "topics",
        "products",
        "names",
        "name",
        "topic",
        "first_id",
        "last_id",
        "first",
        "end",
        "spans",
        "related",
        "same",
        "merged_name",
        "labels",
        "aspects",
        "Price",
        "price",
        "Opening",
        "ids",
        "aspect",
    ]
)
SHAPED = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 200) | st.text(string.printable, max_size=12),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=12,
)
"""JSON shaped like model answers (the keys the parsers look for), to reach deep branches."""


@st.composite
def answers(draw: st.DrawFn) -> str:
    """What a model may send back: noise, JSON, JSON in fences or chatter, cut-off JSON."""
    kind = draw(st.sampled_from(["text", "json", "shaped", "fenced", "chatter", "cut", "literal"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    value = draw(JSON if kind == "json" else SHAPED)
    doc = json.dumps(value)
    if kind == "fenced":
        return f"Here you go:\n```json\n{doc}\n```"
    if kind == "chatter":
        return f"{draw(st.text(max_size=30))} {doc} {draw(st.text(max_size=30))}"
    if kind == "cut":
        return doc[: draw(st.integers(0, max(0, len(doc) - 1)))]
    if kind == "literal":
        return repr(value)
    return doc


IDS = st.lists(st.integers(-3, 400), min_size=1, max_size=40, unique=True).map(sorted)
ASPECTS = ("Opening", "Order Urging", "Price", "Product Description")


def only(errors: tuple[type[BaseException], ...], fn: Callable[[], Any]) -> Any:
    """Run fn; the listed errors are fine (returned as None), anything else fails the test."""
    try:
        return fn()
    except errors:
        return None
    except Exception:
        CRASHED.add(_current[0])
        raise


# --- the codec --------------------------------------------------------------------------------

CODEC = make_codec(None)
FINGERPRINTS = [b"\xc3\x01" + contract(t).fingerprint for t in RECORD_TYPES]
SAMPLES = {
    "TranscriptSegment": {
        "stream_id": "s",
        "segment_id": 7,
        "text": "Hello there $5",
        "ts_ms": 1,
        "speaker": None,
        "domain": "ecommerce",
        "lang": "en",
        "feed": "default",
        "end_of_stream": False,
    },
    "ChunkDone": {"stream_id": "s", "chunk_id": "s:0", "seq": 0, "next_start_id": 4},
}


@PROFILE
@given(
    prefix=st.sampled_from([*FINGERPRINTS, b"\xc3\x01", b"", b"\x00\x00\x00\x00\x01"]),
    body=st.binary(max_size=200),
    expected=st.sampled_from([None, *RECORD_TYPES]),
)
def test_codec_decodes_any_bytes_or_raises_codec_error(
    prefix: bytes, body: bytes, expected: str | None
) -> None:
    count("codec: random bytes")
    record = only((CodecError,), lambda: CODEC.decode(prefix + body, expected))
    assert record is None or isinstance(record, dict)


@PROFILE
@given(kind=st.sampled_from(sorted(SAMPLES)), data=st.data())
def test_codec_decodes_mutated_records_or_raises_codec_error(kind: str, data: st.DataObject) -> None:
    count("codec: mutated records")
    raw = bytearray(CODEC.encode(kind, SAMPLES[kind]))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del raw[at:]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    record = only((CodecError,), lambda: CODEC.decode(bytes(raw), kind))
    assert record is None or isinstance(record, dict)


@HEAVY
@given(kind=st.sampled_from(RECORD_TYPES), record=st.dictionaries(st.text(max_size=15), JSON, max_size=12))
def test_codec_encodes_any_dict_or_raises_codec_error(kind: str, record: dict[str, Any]) -> None:
    count("codec: encode arbitrary dicts")
    data = only((CodecError,), lambda: CODEC.encode(kind, record))
    assert data is None or CODEC.decode(data, kind) is not None


@PROFILE
@given(text=st.text(), stream=st.text(max_size=30), segment_id=st.integers(-(2**63), 2**63 - 1))
def test_codec_round_trips_any_text_or_raises_codec_error(text: str, stream: str, segment_id: int) -> None:
    count("codec: any unicode text")
    record = {**SAMPLES["TranscriptSegment"], "text": text, "stream_id": stream, "segment_id": segment_id}
    data = only((CodecError,), lambda: CODEC.encode("TranscriptSegment", record))
    if data is not None:  # lone surrogates cannot be UTF-8 and are refused
        assert CODEC.decode(data, "TranscriptSegment") == record


# --- model answers: every role's parser --------------------------------------------------------


@PROFILE
@given(text=answers())
def test_extract_json_and_finder_and_checker_parsers(text: str) -> None:
    count("parsers: finder / relationship / extract_json")
    value = only((ParseError,), lambda: extract_json(text))
    assert value is None or isinstance(value, dict | list)
    names = only((ParseError,), lambda: topic_finder.parse_answer(text))
    assert names is None or (0 < len(names) <= topic_finder.MAX_TOPICS and all(n.strip() for n in names))
    verdict = only((ParseError,), lambda: relationship_checker.parse_answer(text))
    assert verdict is None or isinstance(verdict.related, bool)


@PROFILE
@given(text=answers(), ids=IDS, topics=st.lists(st.text(max_size=10), min_size=1, max_size=4))
def test_locator_parsers_return_ids_of_the_chunk(text: str, ids: list[int], topics: list[str]) -> None:
    count("parsers: locator (single, batch)")
    span = only((ParseError,), lambda: topic_locator.parse_answer(text, ids))
    assert span is None or (span[0] in ids and span[1] in ids and span[0] <= span[1])
    spans = only((ParseError,), lambda: topic_locator.parse_batch_answer(text, topics, ids))
    assert spans is None or all(s.first_id in ids and s.last_id in ids for s in spans)


@PROFILE
@given(text=answers(), ids=IDS)
def test_organizer_parser_assigns_only_ids_of_the_topic_once(text: str, ids: list[int]) -> None:
    count("parsers: content organizer")
    result = only((ParseError,), lambda: content_organizer.parse_answer(text, ids, ASPECTS))
    if result is not None:
        placed = [i for group in result.values() for i in group]
        assert set(result) == set(ASPECTS) and len(placed) == len(set(placed)) and set(placed) <= set(ids)


@HEAVY
@given(value=JSON | SHAPED)
def test_as_int_never_raises(value: Any) -> None:
    count("parsers: as_int")
    result = as_int(value)
    assert result is None or isinstance(result, int)


@HEAVY
@given(
    raw=st.binary(max_size=300)
    | JSON.map(lambda v: json.dumps(v).encode())
    | SHAPED.map(lambda v: json.dumps({"choices": [{"message": {"content": v}}], "usage": v}).encode())
)
def test_chat_completion_envelope_parses_or_raises_model_call_error(raw: bytes) -> None:
    count("gateway: chat-completions envelope")
    spec = ModelSpec(name="m", base_url="http://x/v1", price_in_per_mtok=1.0)
    completion = only((ModelCallError,), lambda: _parse_completion(spec, raw, 1.0))
    assert completion is None or (isinstance(completion.text, str) and completion.cost_usd >= 0)


# --- documents and the splitter -----------------------------------------------------------------


@HEAVY
@given(ids=IDS, data=st.data())
def test_format_checker_repairs_or_rejects_any_draft(ids: list[int], data: st.DataObject) -> None:
    count("format checker: any topic draft")
    chunk = {
        "stream_id": "s",
        "chunk_id": "s:0",
        "seq": 0,
        "domain": "ecommerce",
        "lang": "en",
        "is_last": data.draw(st.booleans()),
        "sentences": [{"id": i, "text": f"t{i}"} for i in ids],
    }
    draft = {
        "name": data.draw(st.text(max_size=20)),
        "first_id": data.draw(st.none() | st.integers(-10, 450)),
        "last_id": data.draw(st.none() | st.integers(-10, 450)),
        "final": data.draw(st.booleans()),
        "aspects": data.draw(
            st.dictionaries(
                st.sampled_from([*ASPECTS, "price", "Nope", ""]),
                st.lists(st.integers(-10, 450), max_size=20),
                max_size=5,
            )
        ),
    }
    doc = only((ValidationError,), lambda: check_document(chunk, draft, ASPECTS, 0, 0, carry_limit=30))
    if doc is not None:
        placed = [s["id"] for a in doc["aspects"] for s in a["sentences"]]
        span = [i for i in ids if doc["first_id"] <= i <= doc["last_id"]]
        assert sorted(placed) == span  # every sentence of the span exactly once, nothing else


VALID_STATE = cs.SplitterState(
    "s", buffer=(Sentence(1, "a"), Sentence(2, "b")), max_id=2, sent_upto=2, next_seq=1, in_flight=0
).to_dict()


@HEAVY
@given(
    changes=st.dictionaries(st.sampled_from(sorted(VALID_STATE)), JSON | SHAPED, max_size=3),
    dropped=st.sets(st.sampled_from(sorted(VALID_STATE)), max_size=2),
)
def test_splitter_state_from_a_corrupt_dict_or_validation_error(
    changes: dict[str, Any], dropped: set[str]
) -> None:
    """A changelog record that is not what we wrote (another version, corruption)."""
    count("splitter: state from a corrupt dict")
    raw = {k: v for k, v in {**VALID_STATE, **changes}.items() if k not in dropped}
    only((ValidationError,), lambda: cs.SplitterState.from_dict(raw))


PAGED_HEAD = store.state_writes(
    cs.SplitterState("s", buffer=(Sentence(1, "a"), Sentence(70, "b")), max_id=70), None
).head
PAGES = {0: [[1, "a"]], 1: [[70, "b"]]}


@HEAVY
@given(
    changes=st.dictionaries(st.sampled_from(sorted(PAGED_HEAD)), JSON | SHAPED, max_size=3),
    pages=st.dictionaries(st.integers(-2, 3), JSON | SHAPED, max_size=3),
)
def test_splitter_state_from_corrupt_pages_or_validation_error(
    changes: dict[str, Any], pages: dict[int, Any]
) -> None:
    """A head or pages that are not what we wrote: the state they describe, or ValidationError."""
    count("splitter: state from corrupt pages")
    head = {**PAGED_HEAD, **changes}
    stored = {**PAGES, **pages}
    only((ValidationError,), lambda: store.restore_state(head, stored.get))


@PROFILE
@given(
    k=st.integers(4, 12),
    steps=st.lists(
        st.tuples(st.sampled_from(["seg", "seg", "seg", "done", "eos", "resend"]), st.integers(0, 40)),
        max_size=120,
    ),
)
def test_splitter_sends_every_sentence_once_and_rebuilds_the_chunk_in_flight(
    k: int, steps: list[tuple[str, int]]
) -> None:
    """Random arrivals, done records (with any next start) and re-sends: every sentence is sent
    as new once; a state restored from its paged table form rebuilds exactly the chunk in flight."""
    count("splitter: at-least-once invariants")
    state = cs.SplitterState("s")
    table = SplitterTable()  # the Faust table: the stored head and pages
    next_id, sent_new, in_flight = 1, [], None
    for op, n in steps:
        if op == "seg":
            state = cs.add_segment(state, Sentence(next_id, f"s{next_id}"), False)
            next_id += 1 + n % 3
        elif op == "resend" and next_id > 1:
            state = cs.add_segment(state, Sentence(max(1, next_id - 1 - n), "again"), False)
        elif op == "eos":
            state = cs.mark_end_of_stream(state)
        elif op == "done" and in_flight is not None:
            ids = [s.id for s in in_flight.sentences]
            start = None if n % 4 == 0 else ids[n % len(ids)]
            state = cs.apply_done(state, in_flight.seq, start)
            in_flight = None
        state, spec = cs.next_chunk(state, k)
        if spec is not None:
            in_flight = spec
            sent_new.extend(s.id for s in spec.new_sentences)
        table.write(state)
        restored = table.read("s")
        assert restored == state
        rebuilt = cs.in_flight_chunk(restored)
        if in_flight is None:
            assert rebuilt is None
        else:
            assert rebuilt is not None
            assert (rebuilt.seq, rebuilt.sentences, rebuilt.is_last) == (
                in_flight.seq,
                in_flight.sentences,
                in_flight.is_last,
            )
            assert rebuilt.to_avro(0) == in_flight.to_avro(0)
    assert len(sent_new) == len(set(sent_new))


@PROFILE
@given(
    ids=IDS,
    spans=st.lists(
        st.tuples(st.text(max_size=6), st.integers(-5, 410), st.integers(-5, 410)), min_size=1, max_size=6
    ),
)
def test_relationship_rules_tile_any_spans(ids: list[int], spans: list[tuple[str, int, int]]) -> None:
    count("relationship rules: merge + tile")
    topic_spans = [TopicSpan(n or "x", a, b) for n, a, b in spans]
    verdicts = [None] * (len(topic_spans) - 1)
    merged = relationship_checker.merge_adjacent(topic_spans, verdicts, 0.5, ids)
    tiled = relationship_checker.tile(relationship_checker.merge_same_names(merged), ids)
    covered = [i for s in tiled for i in ids if s.first_id <= i <= s.last_id]
    assert sorted(covered) == ids


@PROFILE
@given(texts=st.lists(st.text(max_size=60), min_size=1, max_size=8))
def test_rendered_transcript_keeps_each_sentence_on_its_own_line(texts: list[str]) -> None:
    """Prompt injection cannot add lines, ids or tags to the transcript block."""
    count("prompt: transcript rendering")
    block = render_transcript([Sentence(i, t) for i, t in enumerate(texts, start=1)])
    lines = block.split("\n")
    assert lines[0] == "<transcript>" and lines[-1] == "</transcript>"
    assert [line.split("]")[0] for line in lines[1:-1]] == [f"[{i}" for i in range(1, len(texts) + 1)]
    assert block.count("<transcript>") == 1 and block.count("</transcript>") == 1


# --- feed and ingest parsers ----------------------------------------------------------------------


@PROFILE
@given(
    fmt=st.sampled_from(["auto", "jsonl", "olp-mini", "srt", "vtt", "news"]),
    text=st.text(max_size=300)
    | JSON.map(json.dumps)
    | st.lists(SHAPED, max_size=5).map(lambda rows: "\n".join(json.dumps(r) for r in rows)),
)
def test_feed_readers_parse_or_raise_feed_error(fmt: str, text: str) -> None:
    count("feeds: file formats")
    from olp.feeds import rows_from_text, to_segments

    only((FeedError,), lambda: list(to_segments(rows_from_text(text, fmt, "fuzz"), "s", "fuzz")))


@PROFILE
@given(
    body=st.binary(max_size=300)
    | st.lists(SHAPED, max_size=5).map(lambda rows: "\n".join(json.dumps(r) for r in rows).encode())
)
def test_ingest_body_parses_or_raises_feed_error(body: bytes) -> None:
    count("ingest: request bodies")
    from ingest.segments import parse_body, to_segments
    from olp.service_settings import FeedLimits
    from olp.settings import FeedSettings

    values = only((FeedError,), lambda: parse_body(body))
    if values is not None:
        only(
            (FeedError,),
            lambda: to_segments(
                values,
                feed_name="default",
                feed=FeedSettings(),
                limits=FeedLimits(),
                default_stream="s",
                now_ms=0,
            ),
        )
