"""Each catalog example of the README's "OpenAI-compatible endpoints" section loads, and every
request its dry run prints passes the contract of the server it is for."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from launcher import openai_contract
from launcher.cli import main
from olp.catalog import load_catalog

README = Path(__file__).parents[2] / "README.md"
SECTION = "### OpenAI-compatible endpoints: catalog examples"


def readme_catalogs() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ")]
    return re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)


EXAMPLES = readme_catalogs()


def test_the_section_has_every_provider() -> None:
    names = [m["name"] for text in EXAMPLES for m in yaml.safe_load(text)["models"]]
    assert names == [
        "gpt-4o-mini",
        "o4-mini",
        "azure-gpt-4o",
        "qwen2.5-7b",
        "llama3.2-3b",
        "haiku-via-litellm",
        "smollm2-135m",
    ]


def dry_run(catalog: Path) -> list[dict[str, Any]]:
    result = CliRunner().invoke(main, ["models", "check", "--dry-run", "--catalog", str(catalog)])
    assert result.exit_code == 0, result.output
    return list(json.loads(result.output))


@pytest.mark.parametrize("example", EXAMPLES, ids=[yaml.safe_load(e)["models"][0]["name"] for e in EXAMPLES])
def test_readme_example_dry_run_passes_the_contract(example: str, tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(example, encoding="utf-8")
    catalog = load_catalog(path)
    requests = dry_run(path)
    assert len(requests) == 5 * len(catalog.models)
    for request in requests:
        spec = catalog.model(request["model"])
        if spec.structured_output == "llama_cpp":
            pytest.importorskip("llama_cpp.server.types")
            assert openai_contract.llama_cpp_errors(request["body"]) == [], request["role"]
        elif openai_contract.available():
            errors = [e.message for e in openai_contract.contract_errors(request["body"])]
            assert errors == [], (request["model"], request["role"])
        else:
            pytest.skip("no OpenAI API description")


def test_the_azure_example_goes_to_its_deployment(tmp_path: Path) -> None:
    (azure,) = [e for e in EXAMPLES if "azure:" in e]
    path = tmp_path / "catalog.yaml"
    path.write_text(azure, encoding="utf-8")
    request = dry_run(path)[0]
    assert request["url"] == (
        "https://my-resource.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions"
        "?api-version=2024-10-21"
    )
    assert request["headers"] == {"Content-Type": "application/json", "api-key": "***"}
