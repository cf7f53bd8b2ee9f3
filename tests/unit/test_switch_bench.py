"""The pure parts of bench/switch_eval.py: the encoder's confidence, the scripted LLM and the
switch under a budget, on hand-made calls."""

from __future__ import annotations

import random

import numpy as np

from bench.switch_eval import Call, run_switch, scripted_llm, sure_share
from processors.gold import load_labelled

GOLD = load_labelled("sample_livestream.gold.json")
WIG = GOLD.topics[0]
TRUTH = WIG.aspect_of()


def test_sure_share_counts_the_sentences_whose_best_aspect_leads_clearly() -> None:
    best = np.array([[0.9, 0.5, 0.1], [0.50, 0.45, 0.1], [0.2, 0.1, 0.6], [0.3, 0.3, 0.3]])
    assert sure_share(best) == 0.5
    assert sure_share(np.zeros((0, 3))) == 1.0


def test_the_scripted_llm_is_right_at_its_accuracy() -> None:
    ids = list(TRUTH)
    right = scripted_llm(ids, TRUTH, GOLD.aspects, 1.0, random.Random(0))
    assert all(TRUTH[i] == a for a, got in right.items() for i in got)
    wrong = scripted_llm(ids, TRUTH, GOLD.aspects, 0.0, random.Random(0))
    assert not any(TRUTH[i] == a for a, got in wrong.items() for i in got)


def calls() -> list[Call]:
    """Four calls of one chunk arriving at 16 s: the encoder files everything under Opening (wrong
    except for the opening sentences), the LLM is right."""
    ids = [tuple(range(1 + 8 * n, 9 + 8 * n)) for n in range(4)]
    truth = {aspect: [i for i in TRUTH if TRUTH[i] == aspect] for aspect in GOLD.aspects}
    return [
        Call(
            part,
            16.0,
            0,
            {"Opening": list(part)},
            confidence,
            {a: [i for i in got if i in part] for a, got in truth.items()},
        )
        for part, confidence in zip(ids, (0.9, 0.1, 0.2, 0.3), strict=True)
    ]


def test_the_switch_escalates_below_its_threshold_while_the_budget_covers_it() -> None:
    free = run_switch("t", calls(), GOLD, 0.25, None)
    assert (free.llm_calls, free.skipped, free.labelled) == (2, 0, 32)
    # 36 LLM seconds a minute hold 9: the chunk's Topic Finder call (4 s) leaves 5, one 4 s
    # escalation fits, the second does not.
    budgeted = run_switch("t", calls(), GOLD, 0.25, 36.0)
    assert (budgeted.llm_calls, budgeted.skipped) == (1, 1)
    assert free.accuracy > budgeted.accuracy > run_switch("t", calls(), GOLD, 0.0, None).accuracy
