"""The policy store's HTTP API and loops on an in-memory bus (policy_store/bus.py): operator
controls publish new versions, human feedback goes through the feedback topic and is learnt by
the feedback loop, retire-worst shrinks a role's pool, state-changing calls need the token and
the lease, and the snapshot carries state and feedback offsets across a restart."""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from olp.catalog import Catalog, ModelSpec
from olp.errors import OlpError
from olp.settings import ROLES, Settings, load_settings
from policy_store.bus import MemoryBus
from policy_store.service import create_app
from policy_store.state import build_learner

Client = Callable[..., Any]
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CATALOG = Catalog(
    models=tuple(
        ModelSpec(name=n, base_url="http://127.0.0.1:9/v1", price_in_per_mtok=p)
        for n, p in (("small", 0.1), ("big", 5.0))
    )
)


def settings(tmp_path: Path, token: str | None = TOKEN) -> Settings:
    return load_settings(
        api_token=token, learner={"snapshot_path": str(tmp_path / "policy.json"), "epsilon": 0.0}
    )


async def start(aiohttp_client: Client, tmp_path: Path, bus: MemoryBus, **kw: Any) -> TestClient:
    return await aiohttp_client(create_app(settings(tmp_path, **kw), CATALOG, seed=1, bus=bus))


async def eventually(check: Callable[[], Any], timeout_s: float = 5.0) -> None:
    """Wait until `check()` (a value or an awaitable) is true."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def observed(client: TestClient) -> int:
    return int((await (await client.get("/v1/policy")).json())["observed"])


async def role(client: TestClient, name: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/policy/{name}")
    assert resp.status == 200
    return dict(await resp.json())


async def test_a_leader_publishes_every_role_once_at_start(aiohttp_client: Client, tmp_path: Path) -> None:
    bus = MemoryBus()
    client = await start(aiohttp_client, tmp_path, bus)
    assert [(a["role"], a["version"]) for a in bus.assignments] == [(r, i + 1) for i, r in enumerate(ROLES)]
    body = await (await client.get("/v1/policy")).json()
    assert body["replica"] == "leader" and body["version"] == len(ROLES)
    assert [r["published_version"] for r in body["roles"]] == [1, 2, 3, 4]
    # Where each estimate comes from (olp policy --explain): nothing measured yet.
    assert body["roles"][0]["evidence"]["small"]["n_quality"] == 0.0
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["replica"] == "leader"


async def test_pin_and_unpin_publish_new_versions(aiohttp_client: Client, tmp_path: Path) -> None:
    bus = MemoryBus()
    client = await start(aiohttp_client, tmp_path, bus)
    resp = await client.put("/v1/policy/topic_finder/pin", json={"model": "big"}, headers=AUTH)
    assert resp.status == 200
    pinned = (await resp.json())["published"]
    assert (pinned["model"], pinned["pinned"], pinned["version"]) == ("big", True, 5)
    assert pinned["reason"] == "pinned to big by operator"
    assert bus.assignments[-1] == pinned

    resp = await client.delete("/v1/policy/topic_finder/pin", headers=AUTH)
    assert resp.status == 200
    unpinned = (await resp.json())["published"]
    assert (unpinned["pinned"], unpinned["version"], unpinned["reason"]) == (False, 6, "unpinned by operator")
    assert [a["version"] for a in bus.assignments] == list(range(1, 7))


async def test_ban_moves_the_role_to_the_other_model(aiohttp_client: Client, tmp_path: Path) -> None:
    bus = MemoryBus()
    client = await start(aiohttp_client, tmp_path, bus)
    resp = await client.put("/v1/policy/topic_locator/ban/small", headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["published"]["model"] == "big"
    assert (await role(client, "topic_locator"))["model"] == "big"
    resp = await client.put("/v1/policy/topic_locator/ban/big", headers=AUTH)  # the last one left
    assert resp.status == 400 and "last model" in (await resp.json())["error"]


async def test_human_feedback_goes_through_the_topic_and_is_learnt(
    aiohttp_client: Client, tmp_path: Path
) -> None:
    bus = MemoryBus()
    client = await start(aiohttp_client, tmp_path, bus)
    before = (await role(client, "content_organizer"))["q_values"]["big"]
    verdict = {"role": "content_organizer", "model": "big", "quality": -1.0, "stream_id": "s1"}
    resp = await client.post("/v1/feedback", json=verdict, headers=AUTH)
    assert resp.status == 202
    body = await resp.json()
    [outcome] = bus.outcomes
    assert body == {"accepted": True, "event_id": outcome["event_id"], "topic": "olp.feedback"}
    assert (outcome["source"], outcome["quality"], outcome["success"]) == ("human", -1.0, False)
    assert outcome["policy_version"] == 1 + ROLES.index("content_organizer")  # its published version

    await eventually(lambda: observed(client))
    assert await observed(client) == 1
    assert (await role(client, "content_organizer"))["q_values"]["big"] < before

    again = await client.post("/v1/feedback", json={**verdict, "event_id": outcome["event_id"]}, headers=AUTH)
    assert again.status == 202 and len(bus.outcomes) == 2
    learnt_once = (await role(client, "content_organizer"))["q_values"]["big"]

    async def read_twice() -> bool:
        return await observed(client) == 2

    await eventually(read_twice)  # read, and dropped by the learner as a duplicate
    assert (await role(client, "content_organizer"))["q_values"]["big"] == learnt_once


@pytest.mark.parametrize(
    "verdict, message",
    [
        ({"role": "topic_finder", "model": "big", "quality": 7}, "[-1, 1]"),
        ({"role": "nobody", "model": "big", "quality": 1}, "unknown role"),
        ({"role": "topic_finder", "quality": 1}, "model"),
        ({"role": "topic_finder", "model": "big", "quality": 1, "chunk_size": -3}, "chunk_size"),
        ({"role": "topic_finder", "model": "big", "quality": 1, "policy_version": "7"}, "policy_version"),
    ],
)
async def test_bad_feedback_is_refused_and_not_produced(
    aiohttp_client: Client, tmp_path: Path, verdict: dict[str, Any], message: str
) -> None:
    bus = MemoryBus()
    client = await start(aiohttp_client, tmp_path, bus)
    resp = await client.post("/v1/feedback", json=verdict, headers=AUTH)
    assert resp.status == 400 and message in (await resp.json())["error"]
    assert bus.feedback_log == []


async def test_retire_worst_removes_the_worst_model_then_refuses(
    aiohttp_client: Client, tmp_path: Path
) -> None:
    bus = MemoryBus()
    client = await start(aiohttp_client, tmp_path, bus)
    for _ in range(3):  # teach it that big is bad for the finder
        verdict = {"role": "topic_finder", "model": "big", "quality": -1.0}
        assert (await client.post("/v1/feedback", json=verdict, headers=AUTH)).status == 202

    async def learnt() -> bool:
        return await observed(client) == 3

    await eventually(learnt)
    resp = await client.post("/v1/roles/topic_finder/retire-worst", headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert body["retired"] == "big"
    assert body["published"]["candidates"] == ["small"] and body["published"]["model"] == "small"
    assert bus.assignments[-1] == body["published"]
    assert (await role(client, "topic_finder"))["candidates"] == ["small"]

    resp = await client.post("/v1/roles/topic_finder/retire-worst", headers=AUTH)
    assert resp.status == 409 and "no model to retire" in (await resp.json())["error"]
    resp = await client.post("/v1/roles/nobody/retire-worst", headers=AUTH)
    assert resp.status == 404


CHANGES = [
    ("PUT", "/v1/policy/topic_finder/pin", {"model": "big"}),
    ("DELETE", "/v1/policy/topic_finder/pin", None),
    ("PUT", "/v1/policy/topic_finder/ban/big", None),
    ("DELETE", "/v1/policy/topic_finder/ban/big", None),
    ("POST", "/v1/roles/topic_finder/retire-worst", None),
    ("POST", "/v1/feedback", {"role": "topic_finder", "model": "big", "quality": 1.0}),
]


@pytest.mark.parametrize("method, path, body", CHANGES)
async def test_every_change_needs_the_token(
    aiohttp_client: Client, tmp_path: Path, method: str, path: str, body: Any
) -> None:
    bus = MemoryBus()
    client = await start(aiohttp_client, tmp_path, bus)
    published = len(bus.policy_log)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        resp = await client.request(method, path, json=body, headers=headers)
        assert resp.status == 401 and "token" in (await resp.json())["error"]
    closed = await start(aiohttp_client, tmp_path / "closed", MemoryBus(), token=None)
    resp = await closed.request(method, path, json=body, headers=AUTH)
    assert resp.status == 403
    assert len(bus.policy_log) == published and bus.feedback_log == []


async def test_a_follower_refuses_operator_changes_but_takes_feedback(
    aiohttp_client: Client, tmp_path: Path
) -> None:
    bus = MemoryBus(leads=False)
    client = await start(aiohttp_client, tmp_path, bus)
    assert (await (await client.get("/healthz")).json())["replica"] == "follower"
    for method, path, body in CHANGES[:-1]:
        resp = await client.request(method, path, json=body, headers=AUTH)
        assert resp.status == 409 and "follower" in (await resp.json())["error"], path
    assert bus.policy_log == []
    resp = await client.post("/v1/feedback", json=CHANGES[-1][2], headers=AUTH)
    assert resp.status == 202 and len(bus.outcomes) == 1

    await bus.move_lease(True)  # the lease comes to this replica: it takes over and publishes

    async def leads() -> bool:
        return bool((await (await client.get("/healthz")).json())["replica"] == "leader")

    await eventually(leads)
    await eventually(lambda: len(bus.policy_log) == len(ROLES))
    assert {a["role"] for a in bus.assignments} == set(ROLES)


async def test_state_and_offsets_survive_a_restart(aiohttp_client: Client, tmp_path: Path) -> None:
    bus = MemoryBus()
    first = await start(aiohttp_client, tmp_path, bus)
    await first.put("/v1/policy/content_organizer/pin", json={"model": "big"}, headers=AUTH)
    await first.post(
        "/v1/feedback", json={"role": "topic_finder", "model": "big", "quality": 1.0}, headers=AUTH
    )

    await eventually(lambda: observed(first))
    before = await (await first.get("/v1/policy")).json()
    await first.close()
    assert (tmp_path / "policy.json").is_file()

    second = await start(aiohttp_client, tmp_path, bus)
    after = await (await second.get("/v1/policy")).json()
    assert [r["model"] for r in after["roles"]] == [r["model"] for r in before["roles"]]
    assert [r["q_values"] for r in after["roles"]] == [r["q_values"] for r in before["roles"]]
    assert after["observed"] == 0, "the snapshot's offsets: feedback already learnt is not read again"
    assert after["version"] >= before["version"]


async def test_the_snapshot_is_read_when_the_app_starts(tmp_path: Path) -> None:
    (tmp_path / "policy.json").write_text("{not json")
    app = create_app(settings(tmp_path), CATALOG, bus=MemoryBus())  # builds: nothing read yet
    assert app.router.routes()
    from olp.errors import ConfigError
    from policy_store.service import state_ctx

    with pytest.raises(ConfigError, match="cannot be restored"):
        await anext(state_ctx(CATALOG, None)(app))


def test_the_store_runs_the_configured_policy_with_every_knob_set(tmp_path: Path) -> None:
    catalog = CATALOG
    knobs = {"policy": "role_rl", "epsilon": 0.2, "latency_slo_s": [["topic_finder", 3.0]]}
    tuned = load_settings(learner=knobs)
    learner = build_learner(tuned, catalog, random.Random(0))
    assert learner.params.epsilon == 0.2
    assert learner.params.latency_slo_s == (("topic_finder", 3.0),)
    assert learner.params.cost_weight == 100.0  # a knob left unset keeps the policy's default

    paper = build_learner(load_settings(learner={"policy": "paper_q"}), catalog, random.Random(0))
    assert paper.params.mode == "paper"
    with pytest.raises(OlpError, match="cannot run policy 'thompson'"):
        build_learner(load_settings(learner={"policy": "thompson"}), catalog, random.Random(0))
