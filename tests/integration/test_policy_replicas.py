"""Two policy-store replicas on the real broker ("two replicas never publish conflicting
versions"; policy_store/leadership.py): one leads and publishes, the other follows and refuses
changes, both learn a human verdict sent to either; when the leader is killed (SIGKILL, no
goodbye) the follower takes over and continues above every version already on `olp.policy`, so
versions never go backwards or repeat."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from launcher.embedded import ChildProcess, free_port
from launcher.scripted_llm import scripted_catalog
from olp.settings import ROLES
from tests.support.stack import ServiceStack, read_topic

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer test-token"}


def _http(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {**AUTH, "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _replica(stack: ServiceStack, name: str) -> tuple[ChildProcess, str]:
    port = free_port()
    child = ChildProcess(
        name,
        [sys.executable, "-m", "launcher", "policy-store"],
        stack._child_env(
            OLP_POLICY_STORE_PORT=str(port),
            OLP_LEARNER__SNAPSHOT_PATH=str(stack.run_dir / f"{name}.json"),
        ),
        stack.run_dir / f"{name}.log",
    ).start()
    stack.children.append(child)
    return child, f"http://127.0.0.1:{port}"


def _replica_role(url: str) -> str | None:
    try:
        return str(_http(f"{url}/healthz")[1]["replica"])
    except OSError:
        return None


def _wait(what: str, until: Any, stack: ServiceStack, timeout_s: float = 40) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if until():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} after {timeout_s}s\n{stack.logs()}")


def _assignments(stack: ServiceStack, until: Any) -> list[dict[str, Any]]:
    return read_topic(stack.settings(), f"{stack.prefix}policy", "Assignment", until, timeout_s=20)


def test_one_leader_publishes_and_a_follower_takes_over_above_its_versions(
    broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    stack = ServiceStack(
        broker, topic_prefix, tmp_path, scripted_catalog("http://127.0.0.1:9/v1", ("small", "big"))
    )
    try:
        first, first_url = _replica(stack, "replica-a")
        _wait("replica-a leads", lambda: _replica_role(first_url) == "leader", stack)
        _second, second_url = _replica(stack, "replica-b")
        urls = (first_url, second_url)
        _wait("replica-b is up", lambda: _replica_role(second_url) is not None, stack)
        # One leader: the sticky lease stays with replica-a through replica-b's join.
        _wait(
            "replica-a leads again after the rebalance", lambda: _replica_role(first_url) == "leader", stack
        )
        assert _replica_role(second_url) == "follower"

        # A human verdict sent to the follower reaches both learners through olp.feedback.
        def q_small(url: str) -> float:
            return float(_http(f"{url}/v1/policy/topic_locator")[1]["q_values"]["small"])

        q_before = {url: q_small(url) for url in urls}
        verdict = {"role": "topic_locator", "model": "small", "quality": -1.0}
        status, body = _http(f"{second_url}/v1/feedback", "POST", verdict)
        assert status == 202 and body["event_id"], body
        for url in urls:
            _wait(f"{url} learns the human verdict", lambda url=url: q_small(url) < q_before[url], stack)

        # Only the leader changes state.
        status, body = _http(f"{second_url}/v1/policy/topic_finder/pin", "PUT", {"model": "big"})
        assert status == 409 and "follower" in body["error"]
        status, body = _http(f"{first_url}/v1/policy/topic_finder/pin", "PUT", {"model": "big"})
        assert status == 200, body
        pinned_version = body["published"]["version"]
        before = _assignments(
            stack,
            lambda rs: (
                any(r["version"] == pinned_version for r in rs) and {r["role"] for r in rs} == set(ROLES)
            ),
        )
        # The follower follows: it shows the leader's record and mirrors the pin.
        _wait(
            "the follower sees the pin",
            lambda: _http(f"{second_url}/v1/policy/topic_finder")[1]["published_version"] == pinned_version,
            stack,
        )
        assert _http(f"{second_url}/v1/policy/topic_finder")[1]["model"] == "big"

        # The leader dies without leaving the group; the follower takes over after the session timeout.
        assert first.proc is not None
        killed = time.monotonic()
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait(5)
        _wait("replica-b takes over", lambda: _replica_role(second_url) == "leader", stack)
        takeover_s = time.monotonic() - killed
        status, body = _http(f"{second_url}/v1/policy/topic_locator/pin", "PUT", {"model": "small"})
        assert status == 200, body
        after_version = body["published"]["version"]
        highest_before = max(r["version"] for r in before)
        records = _assignments(
            stack,
            lambda rs: (
                any(r["version"] == after_version for r in rs)
                and {r["role"] for r in rs if r["version"] > highest_before} == set(ROLES)
            ),
        )

        versions = [r["version"] for r in records]
        assert len(versions) == len(set(versions)), "no version is published twice"
        for role in ROLES:  # one key, one partition: the topic's order is the publication order
            mine = [r["version"] for r in records if r["role"] == role]
            assert mine == sorted(mine), f"{role}: versions went backwards: {mine}"
        old = {r["version"] for r in before}
        new = [r for r in records if r["version"] not in old]
        assert all(r["version"] > highest_before for r in new), (highest_before, new)
        assert {r["role"] for r in new} == set(ROLES), "the new leader republishes every role"
        assert [r["model"] for r in new if r["role"] == "topic_finder"][-1] == "big", "the pin survives"

        # The follower never published while it followed.
        log = (tmp_path / "replica-b.log").read_text()
        lead = log.index("leader: this policy-store replica publishes now")
        assert "published " not in log[:lead], log[:lead]
        print(f"take-over after SIGKILL of the leader: {takeover_s:.1f}s")
        assert takeover_s < 30
    finally:
        stack.stop()
