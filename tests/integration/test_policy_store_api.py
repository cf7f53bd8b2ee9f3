"""The policy store's HTTP API and Kafka loop against the real broker (spec section 4,
"Explainability and control over HTTP"): reads, pin/ban with a bearer token, human feedback
through `olp.feedback`, 4xx with messages, versioned assignments on the policy topic (per role and
per context), state restored after a restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from launcher.clients import follow_topic
from olp.catalog import Catalog, ModelSpec
from olp.settings import ROLES, Settings, load_settings
from policy_store.service import create_app
from schemas.codec import make_codec
from tests.support.stack import read_topic

pytestmark = pytest.mark.integration

CATALOG = Catalog(
    models=tuple(
        ModelSpec(name=n, base_url="http://127.0.0.1:9/v1", price_in_per_mtok=p)
        for n, p in (("small", 0.1), ("big", 5.0))
    )
)
AUTH = {"Authorization": "Bearer s3cret-token"}


def settings(
    broker: str, prefix: str, run_dir: Path, token: str | None = "s3cret-token", **knobs: Any
) -> Settings:
    return load_settings(
        kafka={"bootstrap_servers": broker},
        topic_prefix=prefix,
        app_id=f"{prefix}app",
        api_token=token,
        learner={"snapshot_path": str(run_dir / "policy.json"), "epsilon": 0.0, **knobs},
    )


async def test_reads_and_operator_controls(
    aiohttp_client: Any, broker: str, topic_prefix: str, run_dir: Path
) -> None:
    client = await aiohttp_client(create_app(settings(broker, topic_prefix, run_dir), CATALOG, seed=1))
    resp = await client.get("/v1/policy")
    assert resp.status == 200
    body = await resp.json()
    assert [r["role"] for r in body["roles"]] == list(ROLES)
    assert all(r["model"] in ("small", "big") and r["reason"] for r in body["roles"])

    for headers in ({}, {"Authorization": "Bearer wrong"}):
        resp = await client.put("/v1/policy/topic_finder/pin", json={"model": "big"}, headers=headers)
        assert resp.status == 401 and "token" in (await resp.json())["error"]
    resp = await client.put("/v1/policy/topic_finder/pin", json={"model": "big"}, headers=AUTH)
    assert resp.status == 200
    published = (await resp.json())["published"]
    assert published["model"] == "big" and "pinned" in published["reason"]
    assert (await (await client.get("/v1/policy/topic_finder")).json())["model"] == "big"

    resp = await client.put("/v1/policy/no_such_role/pin", json={"model": "big"}, headers=AUTH)
    assert resp.status == 404
    resp = await client.put("/v1/policy/topic_finder/pin", data=b"{not json", headers=AUTH)
    assert resp.status == 400 and "JSON" in (await resp.json())["error"]
    resp = await client.post(
        "/v1/feedback", json={"role": "topic_finder", "model": "big", "quality": 7}, headers=AUTH
    )
    assert resp.status == 400 and "[-1, 1]" in (await resp.json())["error"]
    resp = await client.post("/v1/feedback", data=b"x" * 100_000, headers=AUTH)
    assert resp.status == 413

    resp = await client.put("/v1/policy/topic_locator/ban/small", headers=AUTH)
    assert resp.status == 200 and (await resp.json())["published"]["model"] == "big"

    # The reader blocks: in a thread, so the store's loops go on meanwhile.
    records = await asyncio.to_thread(
        read_topic,
        settings(broker, topic_prefix, run_dir),
        f"{topic_prefix}policy",
        "Assignment",
        lambda r: any(a["role"] == "topic_locator" and a["model"] == "big" for a in r),
    )
    versions = [a["version"] for a in records]
    assert len(set(versions)) == len(versions), "every published assignment has its own version"


async def test_human_feedback_is_produced_to_the_feedback_topic_and_learnt(
    aiohttp_client: Any, broker: str, topic_prefix: str, run_dir: Path
) -> None:
    conf = settings(broker, topic_prefix, run_dir)
    client = await aiohttp_client(create_app(conf, CATALOG, seed=1))
    before = (await (await client.get("/v1/policy/content_organizer")).json())["q_values"]["big"]
    verdict = {"role": "content_organizer", "model": "big", "quality": -1.0, "stream_id": "s1"}
    resp = await client.post("/v1/feedback", json=verdict, headers=AUTH)
    assert resp.status == 202
    event_id = (await resp.json())["event_id"]
    [outcome] = await asyncio.to_thread(
        read_topic,
        conf,
        f"{topic_prefix}feedback",
        "RoleOutcome",
        lambda r: any(o["event_id"] == event_id for o in r),
    )
    assert (outcome["source"], outcome["model"], outcome["quality"]) == ("human", "big", -1.0)

    deadline = time.monotonic() + 20
    while (await (await client.get("/v1/policy")).json())["observed"] < 1:
        assert time.monotonic() < deadline, "the feedback loop did not read the verdict"
        await asyncio.sleep(0.1)
    after = (await (await client.get("/v1/policy/content_organizer")).json())["q_values"]["big"]
    assert after < before, (before, after)


async def test_without_a_configured_token_changes_are_refused(
    aiohttp_client: Any, broker: str, topic_prefix: str, run_dir: Path
) -> None:
    client = await aiohttp_client(create_app(settings(broker, topic_prefix, run_dir, token=None), CATALOG))
    resp = await client.put("/v1/policy/topic_finder/pin", json={"model": "big"}, headers=AUTH)
    assert resp.status == 403
    assert (await client.get("/healthz")).status == 200


async def test_state_and_versions_survive_a_restart(
    aiohttp_client: Any, broker: str, topic_prefix: str, run_dir: Path
) -> None:
    first = await aiohttp_client(create_app(settings(broker, topic_prefix, run_dir), CATALOG, seed=1))
    await first.put("/v1/policy/content_organizer/pin", json={"model": "big"}, headers=AUTH)
    before = await (await first.get("/v1/policy")).json()
    await first.close()
    assert (run_dir / "policy.json").is_file()

    second = await aiohttp_client(create_app(settings(broker, topic_prefix, run_dir), CATALOG, seed=2))
    after = await (await second.get("/v1/policy")).json()
    assert [r["model"] for r in after["roles"]] == [r["model"] for r in before["roles"]]
    assert after["version"] >= before["version"], "versions never go backwards"


async def test_a_context_gets_its_own_assignment_keyed_by_role_and_context(
    aiohttp_client: Any, broker: str, topic_prefix: str, run_dir: Path
) -> None:
    """Verdicts on Chinese chunks only: once they outweigh the role level's prior in that
    context (a light one here: verdicts on a model the learner has moved away from are
    off-policy), the store publishes the context's assignment, keyed role|context."""
    conf = settings(broker, topic_prefix, run_dir, context_prior=1.0)
    client = await aiohttp_client(create_app(conf, CATALOG, seed=1))
    for i in range(8):
        for model, quality in (("small", -1.0), ("big", 1.0)):
            verdict = {"role": "content_organizer", "model": model, "quality": quality, "lang": "zh"}
            resp = await client.post("/v1/feedback", json={**verdict, "stream_id": f"zh{i}"}, headers=AUTH)
            assert resp.status == 202
    zh = "domain=ecommerce|lang=zh"
    deadline = time.monotonic() + 30
    while not (await (await client.get("/v1/policy/content_organizer")).json())["contexts"]:
        assert time.monotonic() < deadline, "no context of content_organizer is published"
        await asyncio.sleep(0.1)
    view = await (await client.get("/v1/policy/content_organizer")).json()
    assert [(c["context"], c["model"]) for c in view["contexts"]] == [(zh, "big")]
    key = f"content_organizer|{zh}".encode()
    # The reader blocks: in a thread, so the store's loop goes on (its producer acknowledges).
    keyed = await asyncio.to_thread(read_keyed, conf, f"{topic_prefix}policy", [key, b"content_organizer"])
    assert (keyed[key]["context"], keyed[key]["model"]) == (zh, "big")
    assert keyed[b"content_organizer"]["context"] == "*"


def read_keyed(conf: Settings, topic: str, keys: list[bytes], timeout_s: float = 60) -> dict[bytes, Any]:
    """The newest Assignment of each message key of `topic`, read until every one of `keys` came."""
    keyed: dict[bytes, dict[str, Any]] = {}
    codec, deadline = make_codec(None), time.monotonic() + timeout_s
    for msg in follow_topic(conf, topic):
        if msg is not None:
            keyed[msg.key()] = codec.decode(msg.value(), "Assignment")
        if all(k in keyed for k in keys):
            return keyed
        assert time.monotonic() < deadline, f"{topic}: keys {sorted(keyed)}, not all of {keys}"
    raise AssertionError("unreachable")
