"""The embedded stack's quality signals (launcher/stack.py): the strongest local model judges when
the pool has another model for it to judge, and the sample's gold canaries are on by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.stack import SAMPLE_GOLD, EmbeddedStack, local_catalog, strongest_local
from processors.gold import load_labelled


def test_the_strongest_local_model_judges_a_pool_of_several() -> None:
    assert strongest_local(["smollm2-135m"]) is None  # it cannot judge itself
    assert strongest_local(["qwen2.5-coder-0.5b", "smollm2-135m"]) == "qwen2.5-coder-0.5b"
    pool = {"smollm2-135m": "http://127.0.0.1:1/v1", "qwen2.5-coder-1.5b": "http://127.0.0.1:2/v1"}
    catalog = local_catalog(pool)
    assert {m.name: m.judge for m in catalog.models} == {"smollm2-135m": False, "qwen2.5-coder-1.5b": True}
    assert not any(m.judge for m in local_catalog("http://127.0.0.1:1/v1").models)


def test_the_embedded_default_turns_the_samples_canaries_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("OLP_FEEDS", raising=False)
    env = EmbeddedStack(run_dir=tmp_path)._quality_env()
    assert env == {"OLP_FEEDS__DEFAULT__CANARIES": str(SAMPLE_GOLD), "OLP_FEEDS__DEFAULT__CANARY_RATE": "1.0"}
    assert len(load_labelled(SAMPLE_GOLD).topics) == 5
    assert EmbeddedStack(run_dir=tmp_path, canaries=None, judges=())._quality_env() == {
        "OLP_JUDGES": '{"models": []}'
    }
    monkeypatch.setenv("OLP_FEEDS", "{}")  # the user's feeds: left alone
    assert EmbeddedStack(run_dir=tmp_path)._quality_env() == {}
