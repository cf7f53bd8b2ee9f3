"""News feeds (RSS 2.0, RSS 1.0/RDF, Atom) -> sentence rows with stable ids. Pure.

A news source is one endless stream: every article is split into sentences (its title first)
and appended. Sentence ids must increase along the stream and be the same on every poll, so
re-polling is idempotent (the Chunk Splitter ignores ids at or below the highest it has taken).
No hash, no state: the id of an article's sentence is

    minute * 1000 + position

where `minute` counts whole minutes from 2000-01-01T00:00Z to the article's publication time
and `position` numbers the sentences of all articles published in that minute, ordered by
(publication time, guid/link/title). An article published later gets higher ids; one that
appears late with an *earlier* date than what was already sent is ignored downstream, as a
re-send would be. Minutes rather than milliseconds keep ids at ~11 digits, which the roles show
the model in every prompt line. Articles without a parseable date get no id and are skipped
(counted); so are articles dated more than `FUTURE_TOLERANCE_MS` ahead of `now_ms` (a wrong
time zone would otherwise push the stream's highest id past every real article to come).

XML safety: documents are parsed by `defusedxml` with DTDs (hence entities, internal or external)
forbidden, whatever their encoding; such a feed is refused. The caller bounds the document size.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from olp.errors import FeedError
from olp.feeds.formats import ReplayStats, Row

NEWS_EPOCH_MS = 946_684_800_000
"""2000-01-01T00:00:00Z: minute 0 of the id scheme."""
SENTENCES_PER_MINUTE = 1000
FUTURE_TOLERANCE_MS = 5 * 60 * 1000


@dataclass(frozen=True, slots=True)
class Article:
    """One feed entry as plain text."""

    key: str
    """guid / Atom id / link / title: orders articles published at the same time."""
    title: str
    link: str | None
    published_ms: int | None
    body: str


# --- XML -> articles ------------------------------------------------------------------------


def _local(tag: object) -> str:
    name = tag if isinstance(tag, str) else ""
    return name.rsplit("}", 1)[-1]


def _children(element: ET.Element, *names: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) in names]


def _text(element: ET.Element | None) -> str:
    return "".join(element.itertext()).strip() if element is not None else ""


def _first_text(element: ET.Element, *names: str) -> str:
    for name in names:  # in order of preference
        for child in _children(element, name):
            value = _text(child)
            if value:
                return value
    return ""


def parse_time_ms(value: str) -> int | None:
    """RFC 822 (RSS pubDate) or RFC 3339 / ISO 8601 (Atom, Dublin Core) -> epoch ms; None if neither.
    Times without a zone are taken as UTC."""
    value = value.strip()
    if not value:
        return None
    parsed: datetime | None = None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _atom_link(entry: ET.Element) -> str | None:
    for link in _children(entry, "link"):
        if link.get("rel", "alternate") == "alternate" and link.get("href"):
            return link.get("href")
    return None


def _body(entry: ET.Element) -> str:
    """The fullest text an entry has: content:encoded / Atom content, else description / summary."""
    for name in ("encoded", "content", "description", "summary"):
        for child in _children(entry, name):
            if child.get("type") == "xhtml" or len(child):  # inline XHTML: its text nodes
                text = "\n".join(t.strip() for t in child.itertext() if t.strip())
            else:
                text = html_to_text(child.text or "")
            if text.strip():
                return text
    return ""


def parse_xml(data: str | bytes, source: str) -> ET.Element:
    """The document's root element; FeedError when it is not well-formed or holds a DTD (the
    parser sees the declaration whatever the encoding, a UTF-16 one without a byte-order mark
    included)."""
    try:
        root: ET.Element = SafeET.fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as exc:
        raise FeedError(f"{source}: feeds with a DTD or entity declarations are refused") from exc
    except (ET.ParseError, ValueError) as exc:  # ValueError: an encoding expat cannot read
        raise FeedError(f"{source}: not well-formed XML: {exc}") from exc
    return root


def parse_news_feed(data: str | bytes, source: str) -> list[Article]:
    """Every entry of an RSS 2.0, RSS 1.0 (RDF) or Atom document, in document order."""
    root = parse_xml(data, source)
    kind = _local(root.tag)
    if kind == "rss":
        channel = next(iter(_children(root, "channel")), None)
        entries = _children(channel, "item") if channel is not None else []
    elif kind == "RDF":
        entries = _children(root, "item")
    elif kind == "feed":
        entries = _children(root, "entry")
    else:
        raise FeedError(f"{source}: not an RSS or Atom feed (root element <{kind}>)")
    articles = []
    for entry in entries:
        title = " ".join(html_to_text(_first_text(entry, "title")).split())
        link = _first_text(entry, "link") if kind != "feed" else _atom_link(entry)
        published = _first_text(entry, "pubDate", "published", "date", "issued", "updated")
        key = _first_text(entry, "guid", "id") or link or title
        body = _body(entry)
        if not (title or body):
            continue
        articles.append(Article(key, title, link or None, parse_time_ms(published), body))
    return articles


# --- HTML -> text -> sentences --------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    [
        "p",
        "br",
        "div",
        "li",
        "ul",
        "ol",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "tr",
        "td",
        "th",
        "blockquote",
        "section",
        "article",
        "header",
        "footer",
        "figure",
        "figcaption",
        "pre",
        "hr",
        "table",
    ]
)
_SKIP_TAGS = frozenset(("script", "style", "template", "noscript"))


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML fragment; block elements become line breaks."""
    if "<" not in markup and "&" not in markup:
        return markup
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "inc",
        "ltd",
        "co",
        "corp",
        "no",
        "fig",
        "gen",
        "gov",
        "sen",
        "rep",
        "rev",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "u.s",
        "u.k",
        "u.n",
        "a.m",
        "p.m",
        "approx",
        "est",
        "dept",
    ]
)
_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)|[。！？]+[”’」』）]*")


def split_sentences(text: str) -> list[str]:
    """Sentences of plain text: line breaks always end one; so do . ! ? followed by a space (not
    after an abbreviation or an initial, nor before a lower-case word) and 。！？."""
    sentences: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        start = 0
        for match in _END.finditer(line):
            if match.group()[0] == "." and not _ends_sentence(line, start, match):
                continue
            sentence = line[start : match.end()].strip()
            if sentence:
                sentences.append(sentence)
            start = match.end()
        rest = line[start:].strip()
        if rest:
            sentences.append(rest)
    return sentences


def _ends_sentence(line: str, start: int, match: re.Match[str]) -> bool:
    words = line[start : match.start()].split()
    word = words[-1].lower() if words else ""
    if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
        return False
    following = line[match.end() :].lstrip()[:1]
    return not following.islower()


# --- articles -> rows -----------------------------------------------------------------------


def article_sentences(article: Article) -> list[str]:
    """The title, then the body's sentences (the body's first line is dropped when it repeats
    the title, as many feeds do)."""
    body = split_sentences(article.body)
    title = split_sentences(article.title)
    if title and body and " ".join(body[: len(title)]) == " ".join(title):
        body = body[len(title) :]
    return [*title, *body]


def article_rows(
    articles: Iterable[Article], stats: ReplayStats | None = None, now_ms: int | None = None
) -> list[Row]:
    """Rows of every dated article, oldest first, with the ids of the module docstring."""
    stats = stats if stats is not None else ReplayStats()
    dated: list[tuple[int, str, Article]] = []
    for article in articles:
        published = article.published_ms
        if published is None or published < NEWS_EPOCH_MS:
            stats.skipped_undated += 1
        elif now_ms is not None and published > now_ms + FUTURE_TOLERANCE_MS:
            stats.skipped_future += 1
        else:
            dated.append((published, article.key, article))
    rows: list[Row] = []
    minute, position = -1, 0
    for published, _key, article in sorted(dated, key=lambda item: (item[0], item[1])):
        this_minute = (published - NEWS_EPOCH_MS) // 60_000
        if this_minute != minute:
            minute, position = this_minute, 0
        for sentence in article_sentences(article):
            if position >= SENTENCES_PER_MINUTE:
                stats.truncated += 1
                continue
            rows.append(Row(minute * SENTENCES_PER_MINUTE + position, sentence, published))
            position += 1
    return rows
