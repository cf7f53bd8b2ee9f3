"""The materialised document view: newest version wins, re-deliveries change nothing,
bounded history, numbered updates for SSE resumption."""

from __future__ import annotations

from typing import Any

from documents.view import DocumentStore, Update
from olp.topic_documents import NewestDocuments, arrival


def doc(
    stream: str, topic: str, version: int, name: str = "Wig", final: bool = False, **more: Any
) -> dict[str, Any]:
    first = int(topic)
    return {
        "stream_id": stream,
        "topic_id": topic,
        "version": version,
        "name": name,
        "first_id": first,
        "last_id": first + 9,
        "final": final,
        "domain": "ecommerce",
        "lang": "en",
        "aspects": [{"name": "Price", "sentences": [{"id": first, "text": f"v{version}"}]}],
        "repairs": [],
        "updated_ms": 1000 + version,
        **more,
    }


def test_newer_versions_replace_older_ones_and_stale_ones_are_ignored() -> None:
    store = DocumentStore()
    assert store.apply(doc("s", "1", 0)) == Update(1, doc("s", "1", 0))
    assert store.apply(doc("s", "1", 2, final=True)) == Update(2, doc("s", "1", 2, final=True))
    assert store.apply(doc("s", "1", 1)) is None  # late, lower version
    assert store.document("s", "1") == doc("s", "1", 2, final=True)
    assert store.stale == 1 and store.seq == 2


def test_a_redelivered_version_changes_nothing_but_a_rewritten_one_does() -> None:
    store = DocumentStore()
    store.apply(doc("s", "1", 3))
    assert store.apply(doc("s", "1", 3, updated_ms=99_999)) is None  # same content, later write
    assert store.redelivered == 1
    rewritten = doc("s", "1", 3, name="Human hair wig")  # a chunk processed again (at-least-once)
    assert store.apply(rewritten) == Update(2, rewritten)
    assert [d["name"] for d in store.history("s", "1") or []] == ["Human hair wig"]


def test_history_keeps_the_last_versions_oldest_first() -> None:
    store = DocumentStore(history_per_topic=3)
    for version in range(5):
        store.apply(doc("s", "1", version))
    assert [d["version"] for d in store.history("s", "1") or []] == [2, 3, 4]
    assert store.history("s", "9") is None and store.history("x", "1") is None


def test_streams_documents_and_summaries() -> None:
    store = DocumentStore()
    store.apply(doc("b", "40", 1, final=True))
    store.apply(doc("b", "1", 0, final=True))
    store.apply(doc("b", "50", 1))
    store.apply(doc("a", "1", 0, domain="news", lang="zh"))
    assert [d["topic_id"] for d in store.documents("b") or []] == ["1", "40", "50"]  # transcript order
    assert store.documents("nope") is None
    assert store.streams() == [
        {
            "stream_id": "a",
            "domain": "news",
            "lang": "zh",
            "topics": 1,
            "final_topics": 0,
            "first_id": 1,
            "last_id": 10,
            "updated_ms": 1000,
            "seq": 4,
        },
        {
            "stream_id": "b",
            "domain": "ecommerce",
            "lang": "en",
            "topics": 3,
            "final_topics": 2,
            "first_id": 1,
            "last_id": 59,
            "updated_ms": 1001,
            "seq": 3,
        },
    ]


def test_snapshot_and_resumption_after_an_update_number() -> None:
    store = DocumentStore(event_log=3)
    for version in range(3):
        store.apply(doc("s", "1", version))
    store.apply(doc("t", "1", 0))
    store.apply(doc("s", "20", 0))
    assert [(u.seq, u.stream_id) for u in store.snapshot()] == [(3, "s"), (4, "t"), (5, "s")]
    assert [u.seq for u in store.snapshot("s")] == [3, 5]
    assert [u.seq for u in store.updates_after(2) or []] == [3, 4, 5]  # the log reaches back to 3
    assert [u.seq for u in store.updates_after(3, "s") or []] == [5]
    assert store.updates_after(5) == []
    assert store.updates_after(1) is None  # too old: the caller sends a snapshot
    assert store.updates_after(42) is None  # another process's numbering


def test_dead_lettered_sentences_count_as_accounted_for_in_the_cli_view() -> None:
    from launcher.clients import DeadLetterSummary, DocumentView
    from schemas.codec import AvroCodec

    codec = AvroCodec()
    chunk = {
        "stream_id": "s1", "chunk_id": "s1:1", "seq": 1, "feed": "default", "domain": "ecommerce",
        "lang": "en", "sentences": [{"id": i, "text": f"t{i}"} for i in range(11, 21)],
        "is_last": True, "created_ms": 0,
    }
    found = {"chunk": chunk, "stage": "topic_finder", "topics": [], "trail": []}
    letter = {
        "source_topic": "olp.found", "partition": 0, "offset": 3, "key": b"s1",
        "value": codec.encode("RoleResult", found), "stage": "topic_locator",
        "error_type": "RoleFailed", "error": "no usable answer", "ts_ms": 0,
    }
    summary = DeadLetterSummary.from_record(letter, codec)
    expected = DeadLetterSummary("s1", tuple(range(11, 21)), "topic_locator", "RoleFailed: no usable answer")
    assert summary == expected
    junk = DeadLetterSummary.from_record({**letter, "value": b"\x00junk"}, codec)
    assert (junk.stream_id, junk.segment_ids) == ("s1", ())

    view = DocumentView()
    view.apply(doc("s1", "1", 0, final=True))  # sentences 1-10
    assert not view.covers("s1", range(1, 21))
    view.apply_dead_letter(summary)
    assert view.covers("s1", range(1, 21))
    assert not view.covers("s1", range(1, 22))


def test_one_rule_decides_which_version_wins() -> None:
    held = doc("s", "1", 3)
    assert arrival(None, held) == "newer"
    assert arrival(held, doc("s", "1", 2)) == "stale"
    assert arrival(held, {**held, "updated_ms": 99}) == "redelivered"
    assert arrival(held, doc("s", "1", 3, name="Wig, long")) == "newer"  # same version, new content
    assert arrival(held, doc("s", "1", 4)) == "newer"


def test_newest_documents_keep_the_winner_in_transcript_and_update_order() -> None:
    docs = NewestDocuments(keep=2)
    assert docs.apply(doc("s", "11", 1)) and docs.apply(doc("s", "1", 0))
    assert not docs.apply(doc("s", "11", 0))  # stale
    assert not docs.apply({**doc("s", "1", 0), "updated_ms": 5})  # re-delivered
    assert [d["topic_id"] for d in docs.stream("s")] == ["1", "11"]
    assert [d["topic_id"] for d in docs.recent(5)] == ["1", "11"]
    assert docs.apply(doc("s", "11", 2)) and docs.apply(doc("t", "1", 0))  # "s"/"1" falls out
    assert [(d["stream_id"], d["topic_id"], d["version"]) for d in docs.recent(5)] == [
        ("t", "1", 0),
        ("s", "11", 2),
    ]
