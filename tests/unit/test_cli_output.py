"""What the CLI prints of transcripts is inert: rich markup is shown, not interpreted (a
sentence with `[/bold]` used to crash `olp doc`), control characters (terminal escapes) are
removed; and token files are readable by their owner only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from launcher.console import console, print_document, safe
from launcher.stack import write_private


def document(text: str, name: str = "Price") -> dict[str, object]:
    return {
        "stream_id": "live-1",
        "topic_id": "t1",
        "version": 2,
        "final": True,
        "name": name,
        "first_id": 1,
        "last_id": 2,
        "aspects": [{"name": "Facts", "sentences": [{"id": 1, "text": text}]}],
        "repairs": ["[red]x[/red]"],
    }


def test_markup_in_a_sentence_is_printed_as_written() -> None:
    with console.capture() as captured:
        print_document(document("Only [/bold] 20 [link=http://evil.example]left[/link]!", name="[blink]Deal"))
    out = captured.get()
    assert "[1] Only [/bold] 20 [link=http://evil.example]left[/link]!" in out
    assert "[final] [blink]Deal (sentences 1-2)" in out
    assert "repairs: [red]x[/red]" in out


def test_terminal_escapes_and_control_characters_are_removed() -> None:
    text = "pay \x1b]8;;http://evil.example\x1b\\here\x1b]8;;\x1b\\ \x1b[2J now\x07 \u202eevil"
    with console.capture() as captured:
        print_document(document(text))
    out = captured.get()
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "pay ]8;;http://evil.example\\here]8;;\\ [2J now evil" in out
    assert safe("tab\tand\nnewline stay") == "tab\tand\nnewline stay"


def test_token_files_are_written_0600_also_over_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / ".api-token"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_private(path, "s3cret")
    assert path.read_text() == "s3cret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    fresh = tmp_path / "fresh-token"
    write_private(fresh, "t")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


def test_log_redaction_knows_the_feed_services_secrets() -> None:
    from launcher.console import secret_values
    from olp.settings import load_settings

    secret = "whsec_" + "a2V5LWtleS1rZXkta2V5LWtleQ=="
    settings = load_settings(
        ingest={"senders": {"studio": {"token": "sender-token-0123456789", "feeds": ["default"]}}},
        documents={
            "read_token": "reader-token",
            "webhook": {"url": "http://x.example/h", "token": "hook", "secret": secret},
        },
    )
    assert {"sender-token-0123456789", "reader-token", "hook", secret} <= set(secret_values(settings))


def test_the_policy_printout_escapes_what_the_server_sent() -> None:
    from launcher.cli import _print_policy

    role = {"role": "topic_finder", "model": "m[/]", "q_values": {"m[/]": 0.5}, "reason": "[/bold] pinned"}
    with console.capture() as captured:
        _print_policy({"roles": [role]})
    assert "-> m[/]  Q: m[/]=0.50  ([/bold] pinned)" in captured.get()
