"""The instant model backend of the pipeline benchmarks (spec section 9, "instant model backend").

A perfect, zero-think-time model for *synthetic* live-commerce streams of any length: sentence
`i` of a stream is sentence `(i - 1) % 145 + 1` of the bundled sample (olp/data/
sample_livestream.jsonl), and lap `n` of the sample sells the same five products renamed
"<product> #n", so topics never repeat within a stream. The responder reads the sentence ids a
prompt shows and answers every role as a perfect model would (finder: the products in order;
locator: per topic, or all topics at once for the batched prompt; checker: never related;
organizer: a keyword rule), so the pipeline does all its real work and the model costs nothing.

Served by `launcher/scripted_llm.ScriptedLLM` (aiohttp, OpenAI chat-completions), either in a
thread of the caller (`start_in_thread`) or as its own process (`python bench/pipeline_model.py
--port-file F`), so the benchmark's driver does not share a GIL with the model. Writes nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launcher.scripted_llm import Reply, ScriptedLLM, requested_schema  # noqa: E402
from launcher.scripted_roles import PRODUCTS, aspect_of  # noqa: E402

SAMPLE = ROOT / "olp" / "data" / "sample_livestream.jsonl"
SAMPLE_TEXTS: list[str] = [
    json.loads(line)["text"] for line in SAMPLE.read_text().splitlines() if line.strip()
]
LAP = len(SAMPLE_TEXTS)

_ID_LINE = re.compile(r"^\[(\d+)\] ", re.MULTILINE)
_RANGE = re.compile(r"Sentences (\d+) to (\d+) are about")
_QUOTED = re.compile(r'"([^"]+)"')


def sample_id(segment_id: int) -> int:
    return (segment_id - 1) % LAP + 1


TOPIC_LENGTH: int | None = None
"""When set (in this process), product n covers sentences (n-1)*TOPIC_LENGTH+1 .. n*TOPIC_LENGTH
instead of the sample's products: short topics, so every chunk calls every role."""


def product_of(segment_id: int) -> str | None:
    """The product a synthetic sentence is about (None for the sample's off-topic aside)."""
    if TOPIC_LENGTH:
        return f"Product #{(segment_id - 1) // TOPIC_LENGTH + 1}"
    lap, sid = divmod(segment_id - 1, LAP)
    sid += 1
    for name, first, last in PRODUCTS:
        if first <= sid <= last:
            return f"{name} #{lap + 1}"
    return None


def synthetic_text(segment_id: int) -> str:
    return SAMPLE_TEXTS[sample_id(segment_id) - 1]


def _role(body: dict[str, Any]) -> str:
    schema = requested_schema(body)
    props = set((schema.get("properties") or {}).keys())
    task = body["messages"][-1]["content"].split("</transcript>")[-1]
    if "topics" in props:
        return "topic_finder"
    if "spans" in props:
        return "topic_locator_batch"
    if {"first_id", "last_id"} <= props:
        return "topic_locator"
    if "related" in props:
        return "relationship_checker"
    if "labels" in props:
        return "content_organizer"
    # No schema (a catalog model without json_schema): guess from the task text.
    lower = task.lower()
    if "first and the last sentence" in lower or "first_id" in lower:
        return "topic_locator_batch" if '"spans"' in task else "topic_locator"
    if "related" in lower:
        return "relationship_checker"
    if "label" in lower:
        return "content_organizer"
    return "topic_finder"


def role_of(body: dict[str, Any]) -> str:
    """The role a request is for ('topic_locator' for both locator prompts)."""
    return _role(body).removesuffix("_batch")


def _span(name: str, ids: list[int]) -> dict[str, int]:
    inside = [i for i in ids if product_of(i) == name]
    if not inside:
        return {"first_id": ids[0], "last_id": ids[-1]}
    return {"first_id": inside[0], "last_id": inside[-1]}


def answer(body: dict[str, Any]) -> str:
    """A perfect model's answer to any role's prompt."""
    role = _role(body)
    content = body["messages"][-1]["content"]
    transcript, _, task = content.rpartition("</transcript>")
    ids = [int(i) for i in _ID_LINE.findall(transcript)]
    if not ids:
        return json.dumps({"error": "no sentences shown"})
    if role == "topic_finder":
        names = list(dict.fromkeys(p for p in (product_of(i) for i in ids) if p))
        return json.dumps({"topics": names or ["Chat"]})
    if role == "topic_locator":
        named = [q for q in _QUOTED.findall(task) if "#" in q]  # the topic asked about comes last
        return json.dumps(_span(named[-1] if named else "", ids))
    if role == "topic_locator_batch":
        names = [q for q in _QUOTED.findall(task) if "#" in q]
        return json.dumps({"spans": [{"topic": n, **_span(n, ids)} for n in dict.fromkeys(names)]})
    if role == "relationship_checker":
        return json.dumps({"related": False, "name": ""})
    bounds = _RANGE.search(task)
    first, last = (int(bounds.group(1)), int(bounds.group(2))) if bounds else (ids[0], ids[-1])
    labels = [aspect_of(synthetic_text(i)) for i in ids if first <= i <= last]
    return json.dumps({"labels": labels})


Observer = Callable[[float, str, str], None]
"""Called with (arrival time, model, role) for every request."""


def responder(observe: Observer | None = None) -> Callable[[str, dict[str, Any]], Reply]:
    def respond(model: str, body: dict[str, Any]) -> Reply:
        if observe is not None:
            observe(time.time(), model, role_of(body))
        return Reply(answer(body))

    return respond


def start_in_thread(observe: Observer | None = None) -> ScriptedLLM:
    """The instant model on an event loop in a thread of this process."""
    return ScriptedLLM(responder(observe)).start()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port-file", type=Path, required=True, help="write the base URL here when ready")
    args = parser.parse_args()
    server = start_in_thread()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    args.port_file.write_text(server.base_url)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
