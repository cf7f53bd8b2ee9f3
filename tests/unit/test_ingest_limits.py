"""Ingest limits: token buckets per feed and sender, back-pressure, the stream registry (feed
binding, segment-id jumps, open streams per feed) and the accepted-id memory."""

from __future__ import annotations

import pytest

from ingest.limits import (
    AcceptedIds,
    RateLimited,
    RateLimits,
    StreamRegistry,
    TokenBucket,
    check_backpressure,
)
from ingest.segments import TooLargeError
from olp.errors import FeedError
from olp.service_settings import FeedLimits


def test_token_bucket_starts_full_refills_at_its_rate_and_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=2.0, burst=10)
    assert bucket.take(10, now=0.0) == 0.0
    assert bucket.take(3, now=0.5) == pytest.approx(1.0)  # 1 token there, 2 more need 1 s
    assert bucket.take(3, now=1.5) == 0.0  # 3 tokens after 1.5 s; a refused take took nothing
    assert bucket.take(1, now=100.0) == 0.0
    assert bucket.tokens == pytest.approx(9.0)  # never above the burst


def test_rate_limits_are_per_feed_and_name_the_wait() -> None:
    limits = RateLimits()
    limits.check("feed 'shop'", 5, rate=1.0, burst=5, now=0.0)
    limits.check("feed 'news'", 5, rate=1.0, burst=5, now=0.0)  # its own bucket
    with pytest.raises(RateLimited, match="feed 'shop' is over its rate of 1 segments/s") as caught:
        limits.check("feed 'shop'", 3, rate=1.0, burst=5, now=0.5)
    assert caught.value.retry_after_s == pytest.approx(2.5)
    assert caught.value.retry_after_header == "3"
    with pytest.raises(
        TooLargeError, match=r"6 segments in one request exceed the burst of feed 'shop' \(5\)"
    ):
        limits.check("feed 'shop'", 6, rate=1.0, burst=5, now=10.0)


def test_backpressure_refuses_only_beyond_the_limit_and_never_a_lone_batch() -> None:
    check_backpressure(pending=0, incoming=50, limit=10)  # nothing waiting: a batch may go
    check_backpressure(pending=5, incoming=5, limit=10)
    with pytest.raises(RateLimited) as caught:
        check_backpressure(pending=6, incoming=5, limit=10)
    assert caught.value.retry_after_header == "1"


def seg(stream: str, segment_id: int, eos: bool = False) -> dict[str, object]:
    return {"stream_id": stream, "segment_id": segment_id, "end_of_stream": eos}


def test_accepted_ids_answer_re_sends_and_let_an_end_mark_through() -> None:
    ids = AcceptedIds(capacity=2)
    fresh, dup = ids.fresh([seg("a", 1), seg("a", 2)])
    assert (len(fresh), dup) == (2, 0)
    ids.record(fresh)
    assert ids.highest("a") == 2
    fresh, dup = ids.fresh([seg("a", 1), seg("a", 2), seg("a", 3)])
    assert [s["segment_id"] for s in fresh] == [3] and dup == 2
    fresh, dup = ids.fresh([seg("a", 2, eos=True)])
    assert len(fresh) == 1 and dup == 0  # the end mark is news
    ids.record(fresh)
    assert ids.fresh([seg("a", 2, eos=True)]) == ([], 1)  # now it is not
    ids.record([seg("b", 1)])
    ids.record([seg("c", 1)])  # capacity 2: "a" (least recently used) is forgotten
    assert ids.highest("a") is None and ids.highest("c") == 1
    assert AcceptedIds(0).fresh([seg("a", 1)])[1] == 0


def test_a_stream_belongs_to_the_feed_it_was_first_written_on() -> None:
    streams = StreamRegistry(capacity=100)
    streams.check("shop", [seg("live-1", 1)], FeedLimits(), now=0.0, idle_s=60)
    streams.record("shop", [seg("live-1", 1)], now=0.0)
    streams.check("shop", [seg("live-1", 2)], FeedLimits(), now=1.0, idle_s=60)
    with pytest.raises(FeedError, match="stream 'live-1' belongs to another feed"):
        streams.check("wire", [seg("live-1", 2)], FeedLimits(), now=1.0, idle_s=60)
    streams.bind("news-1", "wire")
    with pytest.raises(FeedError, match="stream 'news-1' belongs to another feed"):
        streams.check("shop", [seg("news-1", 1)], FeedLimits(), now=1.0, idle_s=60)


def test_segment_ids_may_not_jump_past_the_feeds_cap() -> None:
    streams = StreamRegistry(capacity=100)
    limits = FeedLimits(max_segment_id_jump=1000)
    with pytest.raises(FeedError, match=r"segment_id 9223372036854775807 of stream 's' jumps"):
        streams.check("shop", [seg("s", 2**63 - 1)], limits, now=0.0, idle_s=60)
    streams.check("shop", [seg("s", 1000)], limits, now=0.0, idle_s=60)
    streams.record("shop", [seg("s", 1000)], now=0.0)
    streams.check("shop", [seg("s", 2000)], limits, now=0.0, idle_s=60)
    with pytest.raises(FeedError, match="jumps 1001 past 1000; feed 'shop' allows at most 1000"):
        streams.check("shop", [seg("s", 2001)], limits, now=0.0, idle_s=60)
    with pytest.raises(FeedError, match="jumps 1001 past 1500"):  # within one request too
        streams.check("shop", [seg("s", 1500), seg("s", 2501)], limits, now=0.0, idle_s=60)


def test_a_feed_holds_at_most_max_streams_open_streams() -> None:
    streams = StreamRegistry(capacity=100)
    limits = FeedLimits(max_streams=2)
    streams.record("shop", [seg("a", 1), seg("b", 1)], now=0.0)
    streams.check("wire", [seg("c", 1)], limits, now=1.0, idle_s=60)  # other feeds count apart
    with pytest.raises(RateLimited, match="feed 'shop' has 2 open streams, its limit"):
        streams.check("shop", [seg("c", 1)], limits, now=1.0, idle_s=60)
    streams.check("shop", [seg("a", 2)], limits, now=1.0, idle_s=60)  # a known stream goes on
    streams.record("shop", [seg("a", 2, eos=True)], now=1.0)  # an ended stream frees its place
    streams.check("shop", [seg("c", 1)], limits, now=2.0, idle_s=60)
    streams.record("shop", [seg("c", 1)], now=2.0)
    with pytest.raises(RateLimited):
        streams.check("shop", [seg("d", 1)], limits, now=3.0, idle_s=60)
    streams.check("shop", [seg("d", 1)], limits, now=100.0, idle_s=60)  # idle ones do too
