"""A cold learner starts each role on its cheapest model, the others running beside it."""

from __future__ import annotations

import random

from olp.catalog import Catalog
from olp.settings import load_settings
from policy_store.state import build_learner, cheapest_first


def _catalog() -> Catalog:
    return Catalog.model_validate(
        {
            "models": [
                {
                    "name": "llm",
                    "base_url": "http://127.0.0.1:1/v1",
                    "price_in_per_mtok": 2.0,
                    "price_out_per_mtok": 4.0,
                },
                {
                    "name": "mini",
                    "base_url": "http://127.0.0.1:1/v1",
                    "price_in_per_mtok": 0.1,
                    "price_out_per_mtok": 0.2,
                },
                {"name": "free", "base_url": "http://127.0.0.1:1/v1"},
                {"name": "also-free", "base_url": "http://127.0.0.1:1/v1"},
            ]
        }
    )


def test_cheapest_first_is_stable_on_ties() -> None:
    assert cheapest_first(_catalog(), ["llm", "free", "mini", "also-free"]) == [
        "free",
        "also-free",
        "mini",
        "llm",
    ]


def test_a_cold_role_is_assigned_its_cheapest_model() -> None:
    learner = build_learner(load_settings(), _catalog(), random.Random(0))
    view = learner.assignment("topic_finder")
    assert view.model == "free"  # not the catalog's first model, "llm"
    assert view.candidates[0] == "free"
