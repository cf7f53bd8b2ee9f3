"""A small news wire for tests (issue 9): articles, the RSS 2.0 document serving them, and a
scripted model that organises them as a perfect model would.

The model knows the articles: the Topic Finder names the articles whose sentences it is shown,
the Topic Locator gives an article's first and last shown id, the Relationship Checker never
merges, and the Content Organizer files each sentence under a news aspect by keyword
(`news_aspect_of`). Tests can then predict the exact documents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from xml.sax.saxutils import escape

from launcher.scripted_llm import Reply
from launcher.scripted_roles import _TOPIC, role_of, shown_sentences
from olp.feeds.news import Article, article_rows

NEWS_ASPECTS = ["Future Plans", "Assumptions", "Opinions", "Facts"]


@dataclass(frozen=True)
class WireArticle:
    guid: str
    title: str
    published: datetime
    sentences: tuple[str, ...]

    @property
    def all_sentences(self) -> list[str]:
        return [self.title, *self.sentences]


ARTICLES = [
    WireArticle(
        "wire-1",
        "City council approves new bike lanes",
        datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC),
        (
            "The city council voted 7 to 2 on Monday to build 30 kilometres of bike lanes.",
            "Construction will start in June and finish next spring.",
            "Council member Ana Ruiz said the plan is long overdue.",
            "Critics expect the lanes might slow down buses.",
        ),
    ),
    WireArticle(
        "wire-2",
        "Heatwave expected this weekend",
        datetime(2024, 5, 1, 10, 0, 30, tzinfo=UTC),  # the same minute as wire-1
        (
            "Temperatures reached 36 degrees in the valley on Friday.",
            "The weather service said it was the earliest heatwave on record.",
            "Officials will open cooling centres across the city.",
            "Some experts believe the heat could strain the power grid.",
        ),
    ),
    WireArticle(
        "wire-3",
        "Harbor City Sharks win the championship",
        datetime(2024, 5, 1, 10, 5, 0, tzinfo=UTC),
        (
            "The Harbor City Sharks won the national title on Sunday.",
            "Fans celebrated in the streets until midnight.",
            "The coach plans to keep the same squad next season.",
            "Many fans think this was the best team in a decade.",
        ),
    ),
    WireArticle(
        "wire-4",
        "Library extends opening hours",
        datetime(2024, 5, 1, 10, 12, 0, tzinfo=UTC),
        (
            "The central library now opens at 7 in the morning.",
            "The mayor said reading rooms were full every evening.",
            "The library will add Sunday hours in the autumn.",
            "Staff expect that students might use the rooms most.",
        ),
    ),
]


def rss(articles: list[WireArticle], title: str = "Harbor City Wire") -> str:
    """An RSS 2.0 document; bodies are HTML paragraphs (escaped), as most feeds send them."""
    items = []
    for article in articles:
        body = "".join(f"<p>{escape(s)}</p>" for s in article.sentences)
        items.append(
            "<item>"
            f"<title>{escape(article.title)}</title>"
            f"<link>https://wire.example/{article.guid}</link>"
            f'<guid isPermaLink="false">{article.guid}</guid>'
            f"<pubDate>{format_datetime(article.published)}</pubDate>"
            f"<description>{escape(body)}</description>"
            "</item>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
        f"<title>{escape(title)}</title><link>https://wire.example/</link><description>news</description>"
        + "".join(items)
        + "</channel></rss>"
    )


def as_feed_articles(articles: list[WireArticle]) -> list[Article]:
    return [
        Article(a.guid, a.title, None, int(a.published.timestamp() * 1000), "\n".join(a.sentences))
        for a in articles
    ]


def sentence_ids(articles: list[WireArticle]) -> dict[str, list[int]]:
    """guid -> the segment ids its sentences get (olp.feeds.news id scheme)."""
    rows = article_rows(as_feed_articles(articles))
    ids: dict[str, list[int]] = {}
    by_text = {r.text: r.segment_id for r in rows}
    for article in articles:
        ids[article.guid] = [by_text[s] for s in article.all_sentences]
    return ids


def news_aspect_of(text: str) -> str:
    lower = text.lower()
    if any(w in lower for w in (" will ", " plans ")):
        return "Future Plans"
    if any(w in lower for w in ("might", "could", "expect")):
        return "Assumptions"
    if any(w in lower for w in (" said ", " think ", " believe ")):
        return "Opinions"
    return "Facts"


def news_model(articles: list[WireArticle]) -> Any:
    """A responder for ScriptedLLM that knows `articles`."""
    ids = sentence_ids(articles)
    spans = [(a.title, ids[a.guid]) for a in articles]

    def respond(model: str, body: dict[str, Any]) -> Reply:
        role = role_of(body)
        shown = [i for i, _ in shown_sentences(body)]
        if role == "topic_finder":
            names = [title for title, own in spans if set(own) & set(shown)]
            return Reply(json.dumps({"topics": names or ["News"]}))
        if role == "topic_locator":
            match = _TOPIC.search(body["messages"][1]["content"])
            name = match.group(1) if match else ""
            for title, own in spans:
                inside = [i for i in shown if i in own]
                if title == name and inside:
                    return Reply(json.dumps({"first_id": inside[0], "last_id": inside[-1]}))
            return Reply(json.dumps({"first_id": shown[0], "last_id": shown[-1]}))
        if role == "relationship_checker":
            return Reply(json.dumps({"related": False, "name": ""}))
        answer: dict[str, list[int]] = {a: [] for a in NEWS_ASPECTS}
        for i, text in shown_sentences(body):
            answer[news_aspect_of(text)].append(i)
        return Reply(json.dumps(answer))

    return respond


def expected_document(article: WireArticle, ids: list[int]) -> dict[str, Any]:
    """The document a perfect model makes of one article (name, span, aspects)."""
    aspects: dict[str, list[dict[str, Any]]] = {a: [] for a in NEWS_ASPECTS}
    for i, text in zip(ids, article.all_sentences, strict=True):
        aspects[news_aspect_of(text)].append({"id": i, "text": text})
    return {
        "name": article.title,
        "first_id": ids[0],
        "last_id": ids[-1],
        "aspects": [{"name": a, "sentences": aspects[a]} for a in NEWS_ASPECTS],
    }
