"""News adapter: RSS 2.0, RSS 1.0 and Atom into sentence rows whose ids are the same
on every poll and increase with publication time; malformed feeds fail clearly."""

from __future__ import annotations

import pytest

from olp.errors import FeedError
from olp.feeds import ReplayStats, rows_from_text
from olp.feeds.news import (
    NEWS_EPOCH_MS,
    Article,
    article_rows,
    html_to_text,
    parse_news_feed,
    parse_time_ms,
    split_sentences,
)
from tests.support.news_wire import ARTICLES, rss, sentence_ids

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Example</title>
  <entry>
    <title type="html">Port &amp;amp; rail strike ends</title>
    <id>urn:uuid:1</id>
    <link rel="self" href="https://x.example/self/1"/>
    <link rel="alternate" href="https://x.example/1"/>
    <published>2024-05-02T08:30:00Z</published>
    <updated>2024-05-03T09:00:00Z</updated>
    <summary>Short.</summary>
    <content type="html">&lt;p&gt;Workers returned on Tuesday.&lt;/p&gt;
      &lt;p&gt;Talks will resume in July.&lt;/p&gt;</content>
  </entry>
  <entry>
    <title>Inline XHTML</title>
    <id>urn:uuid:2</id>
    <updated>2024-05-02T08:31:00+02:00</updated>
    <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">
      <p>First part.</p><p>Second part.</p></div></content>
  </entry>
</feed>
"""

RDF = """<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
         xmlns:dc="http://purl.org/dc/elements/1.1/">
  <channel rdf:about="https://x.example/"><title>RDF</title></channel>
  <item rdf:about="https://x.example/a">
    <title>Old style feed</title><link>https://x.example/a</link>
    <description>It still works. Really.</description>
    <dc:date>2024-05-02T10:00:00Z</dc:date>
  </item>
</rdf:RDF>
"""


def minute_of(iso: str) -> int:
    ms = parse_time_ms(iso)
    assert ms is not None
    return (ms - NEWS_EPOCH_MS) // 60_000


def test_rss_items_become_articles_with_plain_text_bodies() -> None:
    articles = parse_news_feed(rss(ARTICLES[:2]).encode(), "wire")
    assert [a.key for a in articles] == ["wire-1", "wire-2"]
    first = articles[0]
    assert first.title == "City council approves new bike lanes"
    assert first.link == "https://wire.example/wire-1"
    assert first.published_ms == parse_time_ms("2024-05-01T10:00:00Z")
    assert first.body.splitlines() == list(ARTICLES[0].sentences)


def test_atom_entries_prefer_published_time_alternate_link_and_full_content() -> None:
    articles = parse_news_feed(ATOM, "atom")
    assert articles[0] == Article(
        key="urn:uuid:1",
        title="Port & rail strike ends",
        link="https://x.example/1",
        published_ms=parse_time_ms("2024-05-02T08:30:00Z"),
        body="Workers returned on Tuesday.\nTalks will resume in July.",
    )
    assert articles[1].published_ms == parse_time_ms("2024-05-02T06:31:00Z")
    assert articles[1].body == "First part.\nSecond part."


def test_rss_1_0_with_dublin_core_dates() -> None:
    rows = list(rows_from_text(RDF, "auto", "feed.rdf"))
    base = minute_of("2024-05-02T10:00:00Z") * 1000
    assert [(r.segment_id, r.text) for r in rows] == [
        (base, "Old style feed"),
        (base + 1, "It still works."),
        (base + 2, "Really."),
    ]


def test_sentence_ids_are_minute_times_1000_plus_position_in_the_minute() -> None:
    ids = sentence_ids(ARTICLES)
    m0, m5 = minute_of("2024-05-01T10:00:00Z"), minute_of("2024-05-01T10:05:00Z")
    assert ids["wire-1"] == [m0 * 1000 + i for i in range(5)]
    assert ids["wire-2"] == [m0 * 1000 + i for i in range(5, 10)]  # same minute, published later
    assert ids["wire-3"] == [m5 * 1000 + i for i in range(5)]
    assert len(str(ids["wire-3"][0])) == 11


def test_re_polling_gives_the_same_ids_and_a_new_article_only_adds_higher_ones() -> None:
    first_poll = article_rows(parse_news_feed(rss(ARTICLES[:3]), "wire"))
    again = article_rows(parse_news_feed(rss(list(reversed(ARTICLES[:3]))), "wire"))  # another order
    assert again == first_poll
    later = article_rows(parse_news_feed(rss(ARTICLES), "wire"))
    assert later[: len(first_poll)] == first_poll
    assert min(r.segment_id for r in later[len(first_poll) :]) > max(r.segment_id for r in first_poll)


def test_undated_and_future_articles_are_skipped_and_counted() -> None:
    dated = Article("a", "Dated", None, parse_time_ms("2024-05-01T10:00:00Z"), "Body.")
    undated = Article("b", "Undated", None, None, "Body.")
    ancient = Article("c", "Before 2000", None, parse_time_ms("1999-12-31T23:00:00Z"), "Body.")
    future = Article("d", "Tomorrow", None, parse_time_ms("2024-05-02T10:00:00Z"), "Body.")
    stats = ReplayStats()
    rows = article_rows(
        [dated, undated, ancient, future], stats, now_ms=parse_time_ms("2024-05-01T12:00:00Z")
    )
    assert [r.text for r in rows] == ["Dated", "Body."]
    assert (stats.skipped_undated, stats.skipped_future) == (2, 1)


def test_a_title_repeated_at_the_start_of_the_body_is_not_doubled() -> None:
    article = Article(
        "k", "Big news", None, parse_time_ms("2024-05-01T10:00:00Z"), "Big news\nDetails follow."
    )
    assert [r.text for r in article_rows([article])] == ["Big news", "Details follow."]


def test_sentence_splitting() -> None:
    text = (
        "Mr. Smith met Dr. J. Doe at 3 p.m. on Monday! Was it good? Prices rose 3.5 percent. "
        "The U.S. Senate agreed.\nA new line, no stop\n你好。再见！"
    )
    assert split_sentences(text) == [
        "Mr. Smith met Dr. J. Doe at 3 p.m. on Monday!",
        "Was it good?",
        "Prices rose 3.5 percent.",
        "The U.S. Senate agreed.",
        "A new line, no stop",
        "你好。",
        "再见！",
    ]


def test_html_to_text_keeps_visible_text_only() -> None:
    html = "<div><p>One &amp; two</p><script>alert(1)</script><ul><li>Three</li><li>Four</li></ul></div>"
    assert html_to_text(html) == "One & two\nThree\nFour"
    assert html_to_text("plain text, no markup") == "plain text, no markup"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("<rss><channel><item>", "not well-formed XML"),
        ("<html><body>hello</body></html>", r"not an RSS or Atom feed \(root element <html>\)"),
        (
            '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><rss/>',
            "feeds with a DTD or entity declarations are refused",
        ),
    ],
)
def test_malformed_feeds_fail_clearly(document: str, message: str) -> None:
    with pytest.raises(FeedError, match=message):
        parse_news_feed(document, "feed.xml")


def test_time_formats() -> None:
    assert parse_time_ms("Wed, 01 May 2024 10:00:00 GMT") == parse_time_ms("2024-05-01T10:00:00Z")
    assert parse_time_ms("Wed, 01 May 2024 12:00:00 +0200") == parse_time_ms("2024-05-01T10:00:00Z")
    assert parse_time_ms("2024-05-01T10:00:00") == parse_time_ms("2024-05-01T10:00:00+00:00")
    assert parse_time_ms("yesterday") is None
    assert parse_time_ms("") is None
