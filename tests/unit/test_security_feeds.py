"""News feeds are parsed with DTDs and entities forbidden whatever their encoding: a billion-laughs
feed in UTF-16 without a byte-order mark (which a text search for `<!ENTITY` does not see) and a
feed with an external entity are refused with a clear error, before anything is expanded."""

from __future__ import annotations

import pytest

from olp.errors import FeedError
from olp.feeds import rows_from_text
from olp.feeds.news import parse_news_feed


def _laugh(level: int) -> str:
    below = f"&lol{level - 1};" if level > 1 else "&lol;"
    return f'<!ENTITY lol{level} "{below * 10}">\n'


LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY lol "lololololololololololol">\n'
    + "".join(_laugh(level) for level in range(1, 9))
    + ']>\n<rss version="2.0"><channel><item><title>&lol8;</title>'
    "<pubDate>Wed, 01 May 2024 10:00:00 GMT</pubDate></item></channel></rss>"
)
EXTERNAL = (
    '<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY secret SYSTEM "file:///etc/hostname">]>\n'
    '<rss version="2.0"><channel><item><title>&secret;</title>'
    "<pubDate>Wed, 01 May 2024 10:00:00 GMT</pubDate></item></channel></rss>"
)
PLAIN = (
    '<rss version="2.0"><channel><item><title>Rates hold.</title>'
    "<pubDate>Wed, 01 May 2024 10:00:00 GMT</pubDate></item></channel></rss>"
)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le", "utf-16-be", "utf-16"])
@pytest.mark.parametrize("document", [LAUGHS, EXTERNAL], ids=["billion-laughs", "external-entity"])
def test_entity_feeds_are_refused_in_any_encoding(document: str, encoding: str) -> None:
    declared = "UTF-16" if encoding.startswith("utf-16") else encoding  # the XML name of the encoding
    data = document.replace('<?xml version="1.0"?>', f'<?xml version="1.0" encoding="{declared}"?>')
    raw = data.encode(encoding)  # utf-16-le/-be: no byte-order mark
    with pytest.raises(FeedError, match="feeds with a DTD or entity declarations are refused"):
        parse_news_feed(raw, "feed.xml")


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_an_internal_entity_in_bomless_utf16_does_not_reach_the_articles(encoding: str) -> None:
    document = (
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE rss [<!ENTITY x "Entity text.">]>'
        '<rss version="2.0"><channel><item><title>&x;</title>'
        "<pubDate>Wed, 01 May 2024 10:00:00 GMT</pubDate></item></channel></rss>"
    )
    with pytest.raises(FeedError, match="feeds with a DTD or entity declarations are refused"):
        parse_news_feed(document.encode(encoding), "feed.xml")


def test_bomless_utf16_laughs_without_declaration_are_refused() -> None:
    raw = LAUGHS.encode("utf-16-le")  # no XML declaration either: the parser detects the encoding
    with pytest.raises(FeedError, match="refused"):
        parse_news_feed(raw, "feed.xml")


def test_entity_feeds_are_refused_as_text_too() -> None:
    with pytest.raises(FeedError, match="refused"):
        list(rows_from_text(LAUGHS, "news", "feed.rss"))


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le", "utf-16"])
def test_plain_feeds_still_parse_in_any_encoding(encoding: str) -> None:
    articles = parse_news_feed(PLAIN.encode(encoding), "feed.xml")
    assert [a.title for a in articles] == ["Rates hold."]
