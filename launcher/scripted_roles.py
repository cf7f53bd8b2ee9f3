"""Scripted answers for every OLP role, derived from the prompt, for end-to-end tests.

The "model" knows the bundled sample transcript's products (ids from olp/data/
sample_livestream.jsonl), reads the sentence ids shown in the prompt and answers as a perfect
model would: which products appear, where each starts and ends, never related, and each sentence's
aspect by keyword. Tests can then predict the exact documents the pipeline must produce.
"""

from __future__ import annotations

import json
import re
from typing import Any

from launcher.scripted_llm import Reply, requested_schema

PRODUCTS: list[tuple[str, int, int]] = [
    ("Human hair wig", 1, 32),
    ("Running shoes", 33, 68),
    ("Chili crisp", 72, 106),
    ("Thermos cup", 107, 138),
    ("Face cream", 139, 171),
]
"""(name, first id, last id) of each product; ids 69-71 are an off-topic aside."""

_ID_LINE = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)
_RANGE = re.compile(r"Sentences (\d+) to (\d+) are about")
_TOPIC = re.compile(r'^The (?:product|topic): "([^"]+)"$', re.MULTILINE)


def aspect_of(text: str) -> str:
    """The scripted organiser's rule: the aspect a sentence belongs to."""
    lower = text.lower()
    if "$" in text or "price" in lower or "coupon" in lower or "discount" in lower:
        return "Price"
    if any(w in lower for w in ("stock", "hurry", "click", "link", "left", "grab", "timer", "now")):
        return "Order Urging"
    if any(w in lower for w in ("welcome", "hello", "hi ", "hey")):
        return "Opening"
    return "Product Description"


def role_of(body: dict[str, Any]) -> str:
    """Which role a request is for, from the JSON schema it asks the answer to follow."""
    schema = requested_schema(body)
    props = set((schema.get("properties") or {}).keys())
    if "topics" in props:
        return "topic_finder"
    if {"first_id", "last_id"} <= props:
        return "topic_locator"
    if "related" in props:
        return "relationship_checker"
    return "content_organizer"


def shown_sentences(body: dict[str, Any]) -> list[tuple[int, str]]:
    user = (
        body["messages"][-1]["content"]
        if body["messages"][-1]["role"] == "user"
        else body["messages"][1]["content"]
    )
    return [(int(i), t) for i, t in _ID_LINE.findall(user)]


def perfect_answer(body: dict[str, Any]) -> str:
    role = role_of(body)
    sentences = shown_sentences(body)
    ids = [i for i, _ in sentences]
    if role == "topic_finder":
        names = [name for name, first, last in PRODUCTS if any(first <= i <= last for i in ids)]
        return json.dumps({"topics": names or ["Chat"]})
    if role == "topic_locator":
        match = _TOPIC.search(body["messages"][1]["content"])
        name = match.group(1) if match else ""
        for product, first, last in PRODUCTS:
            if product == name:
                inside = [i for i in ids if first <= i <= last]
                if inside:
                    return json.dumps({"first_id": inside[0], "last_id": inside[-1]})
        return json.dumps({"first_id": ids[0], "last_id": ids[-1]})
    if role == "relationship_checker":
        return json.dumps({"related": False, "name": ""})
    task = body["messages"][1]["content"].split("</transcript>")[-1]
    bounds = _RANGE.search(task)
    first, last = (int(bounds.group(1)), int(bounds.group(2))) if bounds else (ids[0], ids[-1])
    return json.dumps({"labels": [aspect_of(text) for i, text in sentences if first <= i <= last]})


def perfect(model: str, body: dict[str, Any]) -> Reply:
    return Reply(perfect_answer(body))
