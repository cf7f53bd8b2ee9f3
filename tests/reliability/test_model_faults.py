"""Model faults: every fault of the matrix is retried with backoff (model faults) or
re-asked (junk answers), then failed over to the next model; no call hangs, and the pipeline on
the real broker turns streams into exact documents while the assigned model misbehaves.

Two tiers:
- the matrix, in process: one role call per fault through the real shell (`RoleCaller`), the
  real gateway and real HTTP, with exact attempt counts and timings;
- the pipeline: policy store + worker on the embedded broker, the faulty model pinned for every
  role (a dead endpoint for the Relationship Checker), one stream per fault at once, plus a stream
  for which every model fails (its chunk goes to the DLQ with the reason; the others go on).
"""

from __future__ import annotations

import json
import random
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from launcher.clients import replay
from launcher.embedded import free_port
from launcher.scripted_llm import Reply, ScriptedLLM
from launcher.scripted_roles import perfect_answer, role_of, shown_sentences
from olp.catalog import Catalog, ModelSpec
from olp.settings import Settings
from processors import topic_finder, topic_locator
from processors.domain import Sentence
from processors.model_gateway import ModelGateway
from processors.policy_view import PolicyView
from processors.role_call import CallContext, RoleCaller
from schemas.codec import make_codec
from tests.reliability.conftest import Report
from tests.reliability.harness import (
    DocumentCollector,
    Stack,
    audit,
    comparable,
    describe_difference,
    expected_documents,
    interleave,
    read_all,
    sample_segments,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

SENTENCES = [
    Sentence(1, "This wig is real human hair."),
    Sentence(2, "It is 89 dollars."),
    Sentence(3, "Buy now."),
]
CTX = CallContext("faults", "faults:0", "ecommerce", "en", "default", 3, "0")
FINDER_OK = '{"topics": ["Human hair wig"]}'
LOCATOR_OK = '{"first_id": 1, "last_id": 3}'


@dataclass(frozen=True)
class Fault:
    name: str
    reply: Reply | None  # None: the endpoint refuses connections
    role: str = "topic_finder"
    expected_attempts: int = 3
    """Calls the faulty model gets: 3 for a retried fault, 2 for junk (one re-ask), 1 for permanent."""
    handling: str = "retried with backoff, then failover"


FAULTS = [
    Fault("timeout", Reply(FINDER_OK, delay_s=3.0)),
    Fault("slow drip", Reply(FINDER_OK, drip_s=4.0)),
    Fault("HTTP 429 + Retry-After: 1", Reply(status=429, retry_after="1")),
    Fault("HTTP 500", Reply(status=500)),
    Fault("HTTP 503", Reply(status=503)),
    Fault("connection refused", None),
    Fault("connection reset", Reply(drop_connection=True)),
    Fault(
        "truncated HTTP body",
        Reply(FINDER_OK, truncate=True),
        expected_attempts=1,
        handling="malformed response: failover at once (a server sending junk is not retried)",
    ),
    Fault(
        "truncated answer",
        Reply('{"topics": ["Human hair'),
        expected_attempts=2,
        handling="ParseError: re-asked once, then failover",
    ),
    Fault(
        "non-JSON answer",
        Reply("Sure! They sell a wig and some shoes."),
        expected_attempts=2,
        handling="ParseError: re-asked once, then failover",
    ),
    Fault(
        "other JSON (obeys an injection)",
        Reply('{"instructions": "ignored", "result": "HACKED"}'),
        expected_attempts=2,
        handling="ParseError: re-asked once, then failover",
    ),
    Fault(
        "ids not in the chunk",
        Reply('{"first_id": 900, "last_id": 950}'),
        role="topic_locator",
        expected_attempts=2,
        handling="ParseError: re-asked once, then failover",
    ),
]
FAULTY_TIMEOUT_S = 0.8


class CountingGateway(ModelGateway):
    """The real gateway, counting its HTTP attempts per model (retries included)."""

    posts: Counter[str]

    async def _post(self, spec: ModelSpec, body: Any) -> Any:
        self.posts[spec.name] += 1
        return await super()._post(spec, body)


async def one_call(fault: Fault) -> tuple[int, str, float, list[dict[str, Any]]]:
    """One role call with `faulty` assigned and `healthy` next: (faulty attempts, model that
    answered, seconds, feedback outcomes)."""
    ok = FINDER_OK if fault.role == "topic_finder" else LOCATOR_OK
    server = ScriptedLLM(
        lambda model, body: fault.reply if model == "faulty" and fault.reply else Reply(ok)
    )
    server.start()
    try:
        faulty_url = server.base_url if fault.reply is not None else f"http://127.0.0.1:{free_port()}/v1"
        catalog = Catalog(
            models=(
                ModelSpec(name="faulty", base_url=faulty_url, timeout_s=FAULTY_TIMEOUT_S),
                ModelSpec(name="healthy", base_url=server.base_url, timeout_s=5),
            )
        )
        outcomes: list[dict[str, Any]] = []

        async def emit(outcome: dict[str, Any]) -> None:
            outcomes.append(outcome)

        policy = PolicyView({fault.role: ["faulty", "healthy"]})
        async with aiohttp.ClientSession() as session:
            gateway = CountingGateway(catalog, session, {})
            gateway.posts = Counter()
            caller = RoleCaller(fault.role, gateway, policy, emit, random.Random(0))
            started = time.monotonic()
            if fault.role == "topic_finder":
                answer = await caller.ask(
                    topic_finder.build_prompt(SENTENCES, "ecommerce", "en"),
                    topic_finder.parse_answer,
                    CTX,
                    topic_finder.answer_schema("ecommerce"),
                )
            else:
                answer = await caller.ask(
                    topic_locator.build_prompt(
                        SENTENCES, "Human hair wig", ["Human hair wig"], "ecommerce", "en"
                    ),
                    lambda text: topic_locator.parse_answer(text, [1, 2, 3]),
                    CTX,
                    topic_locator.answer_schema([1, 2, 3]),
                )
            elapsed = time.monotonic() - started
        return gateway.posts["faulty"], answer.model, elapsed, outcomes
    finally:
        server.stop()


async def test_model_fault_matrix(report: Report) -> None:
    rows = []
    failures = []
    worst = 0.0
    for fault in FAULTS:
        attempts, model, elapsed, outcomes = await one_call(fault)
        worst = max(worst, elapsed)
        feedback = Counter((o["model"], o["success"]) for o in outcomes)
        rows.append([fault.name, fault.role, str(attempts), model, f"{elapsed:.1f}", fault.handling])
        if model != "healthy" or elapsed > 20:
            failures.append(f"{fault.name}: answered by {model} after {elapsed:.1f}s")
        if attempts != fault.expected_attempts:
            failures.append(f"{fault.name}: {attempts} attempts, want {fault.expected_attempts}")
        if feedback[("healthy", True)] != 1 or feedback[("faulty", True)] != 0:
            failures.append(f"{fault.name}: feedback {dict(feedback)}")
        if fault.reply is not None and fault.reply.retry_after and elapsed < 2.0:
            failures.append(f"{fault.name}: Retry-After not honoured ({elapsed:.1f}s for 3 attempts)")
    report.matrix(
        "model fault matrix (one role call per fault; faulty model assigned, healthy next; "
        f"faulty timeout {FAULTY_TIMEOUT_S}s, 3 attempts)",
        ["fault", "role", "faulty calls", "answered by", "seconds", "handling"],
        rows,
    )
    report.add(
        "model faults: matrix (in process)",
        f"{len(FAULTS)} fault kinds, 1 call each",
        sum(1 for r in rows if r[3] != "healthy"),
        None,
        0,
        worst,
        "recovery = slowest call until the next model answered",
    )
    assert not failures, failures


# --- the pipeline on the broker ------------------------------------------------------------------

PIPELINE_FAULTS: dict[str, Callable[[], Reply]] = {
    "none": lambda: Reply(),  # control: the faulty model answers well for this stream
    "timeout": lambda: Reply(delay_s=3.0),
    "drip": lambda: Reply(drip_s=4.0),
    "r429": lambda: Reply(status=429, retry_after="1"),
    "r500": lambda: Reply(status=500),
    "reset": lambda: Reply(drop_connection=True),
    "trunc": lambda: Reply(truncate=True),
    "nonjson": lambda: Reply("I think it is about a wig."),
    "badids": lambda: Reply(),  # see BAD_IDS: only roles that answer with ids get them wrong
}
BAD_IDS = {
    "topic_locator": '{"first_id": 9000, "last_id": 9100}',
    "content_organizer": '{"Price": [9000, 9001], "Opening": [-4]}',
}
ALL_DOWN = "alldown"
"""For this stream every model fails: its chunk must be dead-lettered, the others go on."""
SENTENCES_PER_STREAM = 50


def marker(kind: str) -> str:
    return f"(fx-{kind})"


def first_ask(body: dict[str, Any]) -> dict[str, Any]:
    """The request as first asked (a re-ask appends the bad answer and a complaint)."""
    return {**body, "messages": body["messages"][:2]}


def kind_of(body: dict[str, Any]) -> str:
    text = " ".join(t for _, t in shown_sentences(first_ask(body)))
    for kind in (*PIPELINE_FAULTS, ALL_DOWN):
        if marker(kind) in text:
            return kind
    return "none"


def dead_lettered_ids(settings: Settings, dead: Iterable[Mapping[str, Any]]) -> Counter[int]:
    """Sentence ids in the original records of `dead` letters: a Chunk, or the chunk a role's
    record embeds."""
    codec = make_codec(settings.schema_registry_url)
    ids: Counter[int] = Counter()
    for letter in dead:
        record = codec.decode(letter["value"], topic=letter["source_topic"])
        chunk = record.get("chunk", record)
        ids.update(int(s["id"]) for s in chunk["sentences"])
    return ids


def test_pipeline_survives_model_faults(
    broker: str, topic_prefix: str, run_dir: Path, report: Report
) -> None:
    calls: Counter[tuple[str, str]] = Counter()

    def responder(model: str, body: dict[str, Any]) -> Reply:
        kind = kind_of(body)
        calls[(model, kind)] += 1
        good = perfect_answer(first_ask(body))
        if kind == ALL_DOWN:
            return Reply(status=500)
        if model == "faulty" and kind == "badids":
            return Reply(BAD_IDS.get(role_of(first_ask(body)), good))
        if model == "faulty" and kind != "none":
            fault = PIPELINE_FAULTS[kind]()
            return Reply(
                fault.text or good,
                fault.status,
                fault.delay_s,
                fault.retry_after,
                fault.drop_connection,
                fault.truncate,
                fault.drip_s,
            )
        return Reply(good)

    server = ScriptedLLM(responder).start()
    catalog = Catalog(
        models=(
            ModelSpec(
                name="faulty", base_url=server.base_url, timeout_s=FAULTY_TIMEOUT_S, max_concurrency=32
            ),
            ModelSpec(name="down", base_url=f"http://127.0.0.1:{free_port()}/v1", timeout_s=2),
            ModelSpec(name="healthy", base_url=server.base_url, timeout_s=10, max_concurrency=32),
        )
    )
    stack = Stack(
        broker,
        topic_prefix,
        run_dir,
        catalog,
        {
            "OLP_FEEDS": json.dumps({"default": {"chunk_size": SENTENCES_PER_STREAM}}),
            "OLP_WORKER_CONCURRENCY": "8",
        },
    )
    streams = {}
    for kind in (*PIPELINE_FAULTS, ALL_DOWN):
        segments = sample_segments(f"faults-{kind}", SENTENCES_PER_STREAM)
        streams[kind] = [{**s, "text": f"{s['text']} {marker(kind)}"} for s in segments]
    collector = DocumentCollector(stack.settings())
    try:
        stack.start_policy_store()
        for role, model in [
            ("topic_finder", "faulty"),
            ("topic_locator", "faulty"),
            ("relationship_checker", "down"),
            ("content_organizer", "faulty"),
        ]:
            request = urllib.request.Request(
                f"{stack.api_url}/v1/policy/{role}/pin",
                data=json.dumps({"model": model}).encode(),
                method="PUT",
                headers={"Authorization": "Bearer test-token", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 200
        worker = stack.start_worker()
        deadline = time.monotonic() + 30
        while "content_organizer -> faulty" not in worker.log_path.read_text(errors="replace"):
            assert time.monotonic() < deadline, "the worker never took the pinned policy"
            time.sleep(0.2)
        collector.start()
        started = time.monotonic()
        replay(stack.settings(), interleave(*streams.values()))
        done_at: dict[str, float] = {}

        def complete() -> bool:
            for kind, segs in streams.items():
                if (
                    kind != ALL_DOWN
                    and kind not in done_at
                    and collector.covers(f"faults-{kind}", [s["segment_id"] for s in segs])
                ):
                    done_at[kind] = time.monotonic() - started
            return len(done_at) == len(streams) - 1

        collector.wait(
            complete,
            180,
            stack.dead_children,
            lambda: (
                f"done {done_at}; calls {dict(calls)}; worker stats {stack.worker_stats()}\n"
                + "\n".join(
                    f"{kind}: "
                    + describe_difference(
                        comparable(collector.stream(f"faults-{kind}")), expected_documents(segs)
                    )
                    for kind, segs in streams.items()
                    if kind not in done_at
                )
            ),
        )
        # The stream no model can serve ends in the DLQ, not in documents: every sentence sent on
        # it must be in a dead letter (or a document), else it is lost.
        all_down_ids = {int(s["segment_id"]) for s in streams[ALL_DOWN]}
        deadline = time.monotonic() + 60
        while True:
            dead = read_all(stack.settings(), f"{topic_prefix}dlq", "DeadLetter", quiet_s=1.0)
            all_down = [d for d in dead if d["key"] == f"faults-{ALL_DOWN}".encode()]
            if all_down_ids <= set(dead_lettered_ids(stack.settings(), all_down)):
                break
            if time.monotonic() > deadline:
                chunks = read_all(stack.settings(), f"{topic_prefix}chunks", "Chunk", quiet_s=1.0)
                raise AssertionError(
                    f"'{ALL_DOWN}' sentences missing from the DLQ: "
                    f"{sorted(all_down_ids - set(dead_lettered_ids(stack.settings(), all_down)))}; "
                    f"calls {dict(calls)}; worker stats {stack.worker_stats()}; "
                    f"chunks {[c['chunk_id'] for c in chunks]}"
                )
        crashes = stack.crash_lines()
        rows, lost, duplicated = [], 0, 0
        for kind, segs in streams.items():
            ids = {int(s["segment_id"]) for s in segs}
            result = audit(collector.stream(f"faults-{kind}"), ids)
            dlq = [d for d in dead if d["key"] == f"faults-{kind}".encode()]
            in_dlq = set(dead_lettered_ids(stack.settings(), dlq))
            documented = {
                int(s["id"])
                for d in collector.stream(f"faults-{kind}")
                for a in d["aspects"]
                for s in a["sentences"]
            }
            missing = len(ids - documented - in_dlq)
            lost += missing
            duplicated += result.duplicated
            rows.append(
                [
                    kind,
                    str(len(ids)),
                    str(calls[("faulty", kind)]),
                    str(calls[("healthy", kind)]),
                    f"{missing} ({len(ids & in_dlq)} in DLQ)" if dlq else str(missing),
                    str(result.duplicated),
                    str(len(dlq)),
                    f"{done_at[kind]:.1f}" if kind in done_at else "-",
                ]
            )
        report.matrix(
            "model faults on the pipeline (faulty model pinned for finder/locator/organizer, a refusing "
            "endpoint pinned for the relationship checker; one stream per fault, all at once)",
            ["stream fault", "segments", "faulty calls", "healthy calls", "lost", "dup", "DLQ", "done s"],
            rows,
        )
        report.add(
            "model faults: pipeline on broker",
            f"{len(streams)} streams x {SENTENCES_PER_STREAM} segments",
            lost,
            duplicated,
            len(crashes),
            max(done_at.values()),
            f"'{ALL_DOWN}' stream (every model fails) -> DLQ with reason; its sentences in dead "
            "letters count as accounted for",
        )
        # Each stream's fault must really have been served: the faulty model was asked on every
        # stream, and on every faulty one the healthy model finished the job.
        assert all(calls[("faulty", kind)] > 0 for kind in streams), calls
        assert all(calls[("healthy", kind)] > 0 for kind in streams if kind != "none"), calls
        assert lost == 0, rows
        for kind, segs in streams.items():
            if kind != ALL_DOWN:
                assert comparable(collector.stream(f"faults-{kind}")) == expected_documents(segs), (
                    describe_difference(
                        comparable(collector.stream(f"faults-{kind}")), expected_documents(segs)
                    )
                )
        others = [d for d in dead if d["key"] != f"faults-{ALL_DOWN}".encode()]
        assert not others, others[:3]
        assert all(d["error_type"] == "RoleFailed" for d in all_down), all_down
        assert "HTTP 500" in all_down[0]["error"]
        unexpected = set(dead_lettered_ids(stack.settings(), all_down)) - all_down_ids
        assert not unexpected, f"dead letters of '{ALL_DOWN}' carry ids never sent: {sorted(unexpected)}"
        assert not crashes, "\n".join(crashes)
    finally:
        collector.stop()
        stack.stop()
        server.stop()
