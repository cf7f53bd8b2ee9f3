"""The policy store's dashboard in a real headless browser (spec section 7; issue 5).

Runs the real policy store and a worker as subprocesses on the test broker, sends part of the
sample transcript through, pins a role's model over the API, and opens `/dashboard` in Debian's
Chromium, driven over the DevTools protocol by a small aiohttp websocket client (no Selenium or
Playwright). The page must show each role's live assignment (as `/v1/policy` reports it), follow
a second pin without a reload, chart spend against the feed's budget and list the documents;
per role it must show sparklines of the history, the calibration gap against the gold canaries
run beside the stream, and keep the reason text readable at 1,000 and 1,400 px.
A screenshot is saved under the test's tmp dir and its path printed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from launcher.clients import replay
from launcher.scripted_llm import ScriptedLLM, scripted_catalog
from launcher.scripted_roles import perfect
from olp.feeds import read_transcript
from olp.settings import ROLES
from tests.support.stack import ServiceStack

CHROMIUM = Path("/usr/bin/chromium")
DATA = Path(__file__).parents[2] / "olp" / "data"
SAMPLE = DATA / "sample_livestream.jsonl"
FEED = {
    "chunk_size": 30,
    "budget_usd_per_hour": 0.05,
    "canaries": str(DATA / "sample_livestream.gold.json"),
    "canary_rate": 0.5,
}
"""Gold canaries beside the stream, so the page has measured quality to show estimates against."""

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]


class DevTools:
    """The few DevTools-protocol calls the test needs, over one page's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        call_id = self._next_id
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            message = await self._ws.receive_json(timeout=30)
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout_s: float = 30, what: str = "") -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"page never showed {what or expression}")
            await asyncio.sleep(0.25)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[int]:
    """Headless Chromium with a fresh profile; yields its DevTools port."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    process = subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1400,1500",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "chromium.log").open("wb"),
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"chromium did not start: {(tmp_path / 'chromium.log').read_text()[-2000:]}"
                )
            time.sleep(0.1)
        yield int(port_file.read_text().split()[0])
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def _pin(api_url: str, role: str, model: str) -> None:
    request = urllib.request.Request(
        f"{api_url}/v1/policy/{role}/pin",
        data=json.dumps({"model": model}).encode(),
        method="PUT",
        headers={"Authorization": "Bearer test-token", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200


def _model_cells(role: str) -> str:
    return f"document.querySelector('#assignments .role-card[data-role=\"{role}\"] .model')?.textContent"


LAYOUT = """({
  reasons: [...document.querySelectorAll('#assignments .role-card .reason')]
      .map(e => e.getBoundingClientRect().width),
  overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
})"""
"""The width of every role's reason text, and how far the page overflows sideways."""

SPARKLINES = """[...document.querySelectorAll('#assignments .role-card')].every(card =>
  ['quality', 'reward', 'spend'].every(series => card.querySelector(
    `figure.spark[data-series="${series}"] svg path.spark-line`) !== null))
  && [...document.querySelectorAll('figure.spark[data-series="quality"] path.spark-line')]
      .some(p => (p.getAttribute('d').match(/[ML]/g) || []).length >= 2)"""
"""Every role has its three sparklines, and some quality line joins two or more points."""

GAPS = """[...document.querySelectorAll('#assignments td.gap[data-gap]')].map(td => ({
  gap: Number(td.dataset.gap), text: td.textContent, over: td.classList.contains('over'),
  role: td.closest('.role-card').dataset.role, model: td.closest('tr').dataset.model }))"""
"""Every calibration gap the page shows, and whether it is flagged."""


async def _layout_at(tab: DevTools, width: int) -> dict[str, Any]:
    await tab.call(
        "Emulation.setDeviceMetricsOverride", width=width, height=1200, deviceScaleFactor=1, mobile=False
    )
    await asyncio.sleep(0.3)
    return dict(await tab.evaluate(LAYOUT))


async def _drive(port: int, api_url: str, pin_live: Callable[[], None], screenshot: Path) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json(content_type=None)
        page = next(t for t in targets if t.get("type") == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            tab = DevTools(ws)
            await tab.call("Page.enable")
            await tab.call("Runtime.enable")
            await tab.call("Page.navigate", url=f"{api_url}/dashboard")
            await tab.wait_for("document.body && document.body.dataset.loaded === 'true'", what="loaded data")

            # Every role's live assignment, as the policy store's API reports it.
            policy = _get_json(f"{api_url}/v1/policy")
            for role in policy["roles"]:
                expected, cell = role["model"], _model_cells(role["role"])
                shown = await tab.wait_for(
                    f"({cell} === {json.dumps(expected)}) && {cell}", what=f"{role['role']} -> {expected}"
                )
                assert shown == expected

            # A change made while the page is open shows up without a reload.
            pin_live()
            await tab.wait_for(f"{_model_cells('topic_finder')} === 'model-b'", what="topic_finder re-pinned")

            # Spend against the budget line, throughput rows, and the documents.
            await tab.wait_for(
                "document.querySelector('figure.budget[data-feed=\"default\"] svg polyline.spend') !== null"
                " && document.querySelector('figure.budget[data-feed=\"default\"] svg line.limit') !== null",
                what="spend chart with budget line",
            )
            await tab.wait_for(
                "[...document.querySelectorAll('#documents li.document .doc-title')]"
                ".some(e => e.textContent === 'Human hair wig')",
                what="the wig document",
            )
            await tab.wait_for(
                "document.querySelector('#throughput tr[data-stage=\"topic_finder\"] td.lag')"
                "?.textContent !== '—'",
                what="lag of the topic finder's input",
            )
            # Per role: sparklines drawn from the history, the canary-measured calibration gap.
            await tab.wait_for(SPARKLINES, timeout_s=45, what="every role's sparklines")
            gaps = await tab.wait_for(f"(g => g.length > 0 && g)({GAPS})", what="a calibration gap")
            layouts = {width: await _layout_at(tab, width) for width in (1000, 1400)}
            seen = await tab.evaluate(
                """({
                  roles: Object.fromEntries([...document.querySelectorAll('#assignments .role-card')]
                      .map(r => [r.dataset.role, r.querySelector('.model').textContent])),
                  rates: [...document.querySelectorAll('#throughput td.num')].map(td => td.textContent),
                  documents: [...document.querySelectorAll('#documents .doc-title')].map(e => e.textContent),
                  caption: document.querySelector('figure.budget figcaption').textContent,
                  status: document.getElementById('status').textContent,
                })"""
            )
            shot = await tab.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            import base64

            screenshot.write_bytes(base64.b64decode(shot["data"]))
            return {**seen, "gaps": gaps, "layouts": layouts}


def test_dashboard_shows_live_assignments_in_a_browser(
    broker: str, topic_prefix: str, run_dir: Path, tmp_path: Path, chromium: int
) -> None:
    llm = ScriptedLLM(perfect).start()
    stack = ServiceStack(
        broker,
        topic_prefix,
        run_dir,
        scripted_catalog(llm.base_url, ("model-a", "model-b")),
        {"OLP_FEEDS": json.dumps({"default": FEED})},
    )
    try:
        stack.start_policy_store()
        stack.start_worker()
        segments = list(read_transcript(SAMPLE, "dash-1"))[:40]
        segments[-1]["end_of_stream"] = True
        replay(stack.settings(), segments)
        stack.wait_for_documents("dash-1", segments[-1]["segment_id"], timeout_s=60)
        _pin(stack.api_url, "topic_locator", "model-b")

        screenshot = tmp_path / "dashboard.png"
        seen = asyncio.run(
            _drive(
                chromium, stack.api_url, lambda: _pin(stack.api_url, "topic_finder", "model-b"), screenshot
            )
        )
        print(f"\ndashboard screenshot: {screenshot}")

        assert set(seen["roles"]) == set(ROLES)
        assert seen["roles"]["topic_locator"] == "model-b" and seen["roles"]["topic_finder"] == "model-b"
        assert "Human hair wig" in seen["documents"]
        assert "of $0.05 this hour" in seen["caption"]
        # Readable at both widths: the reason text gets a real column, the page no sideways scroll.
        for width, layout in seen["layouts"].items():
            assert len(layout["reasons"]) == len(ROLES) and min(layout["reasons"]) > 200, (width, layout)
            assert layout["overflow"] <= 0, (width, layout)
        assert all(
            gap["text"] == f"{gap['gap']:.2f}" and gap["over"] == (gap["gap"] > 0.15) for gap in seen["gaps"]
        )
        explained = _get_json(f"{stack.api_url}/v1/dashboard")["policy"]["roles"]
        gaps = {(r["role"], m): ev.get("canary_gap") for r in explained for m, ev in r["evidence"].items()}
        assert all(gaps[(g["role"], g["model"])] is not None for g in seen["gaps"])
        assert not any(rate == "—" for rate in seen["rates"][:2]), seen["rates"]
        data = _get_json(f"{stack.api_url}/v1/dashboard")
        assert data["spend_total_usd"] > 0 and data["budgets"][0]["spent_usd"] > 0
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    finally:
        stack.stop()
        llm.stop()
