"""`olp policy` sends the read token, says which setting is missing on 401, and prints the
policy store's text as text (a model or reason with rich markup cannot restyle or crash it)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from launcher.cli import main

TOKEN = "r3ad-only"
EVIDENCE = {"canary": 4.0, "canary_mean": 0.25, "canary_gap": 0.25, "judge": 1.0, "unlabelled": 7.0}
EVIDENCE |= {"quality": 0.5, "quality_sd": 0.3}
ROLE = {
    "role": "topic_finder",
    "model": "m[/bold]",
    "q_values": {"m[/bold]": 1.5},
    "reason": "[red]x",
    "evidence": {"m[/bold]": EVIDENCE},
    "contexts": [
        {"context": "domain=ecommerce|lang=zh|chunk=m", "model": "other", "q_values": {"other": 0.75}}
    ],
}
POLICY = {"roles": [ROLE]}


class _Store(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps(POLICY).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Store)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_policy_sends_the_read_token_and_prints_markup_as_text(url: str) -> None:
    result = CliRunner().invoke(main, ["policy", "--url", url], env={"OLP_READ_TOKEN": TOKEN})
    assert result.exit_code == 0, result.output
    assert "m[/bold]" in result.output and "[red]x" in result.output
    context_line = next(line for line in result.output.splitlines() if "lang=zh" in line)
    assert "-> other" in context_line and "other=0.75" in context_line  # the per-context choice


def test_policy_without_a_token_names_the_setting(url: str) -> None:
    no_token = {"OLP_READ_TOKEN": "", "OLP_API_TOKEN": ""}
    result = CliRunner().invoke(main, ["policy", "--url", url], env=no_token)
    assert result.exit_code == 1
    assert "OLP_READ_TOKEN" in result.output


def test_explain_shows_the_evidence_by_source_and_the_gap_to_the_canaries(url: str) -> None:
    result = CliRunner().invoke(
        main, ["policy", "--url", url, "--explain"], env={"OLP_READ_TOKEN": TOKEN, "COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "topic_finder" in line and "0.30" in line)
    assert "+0.50 ± 0.30" in row and "+0.25" in row and "| 0.25" in row.replace("│", "|")
