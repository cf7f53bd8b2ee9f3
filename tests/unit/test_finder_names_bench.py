"""The scoring of bench/finder_names.py (one name credits one product of its chunk, products told
apart by their own keywords) and the hand-made labels it reads."""

from __future__ import annotations

import itertools

import pytest

from bench.finder_names import ChunkNames, credited, default_data, load_labels, own_keywords, score_names
from olp.feeds import read_transcript
from processors.gold import GoldTopic

BOB = GoldTopic("Bob wig", ("wig", "bob"), 1, 3, {})
RED = GoldTopic("Red wig", ("wig", "red wig"), 4, 10, {})
PANEL = GoldTopic("Solar panel", ("solar", "panel"), 11, 20, {})


def test_one_name_credits_one_product_of_its_chunk() -> None:
    ids = list(range(1, 11))
    assert credited(["Wig"], ids, [BOB, RED]) == ({"Red wig"}, 0)  # the wig with most sentences here
    assert credited(["Wig", "Wigs"], ids, [BOB, RED]) == ({"Bob wig", "Red wig"}, 0)


def test_the_matching_is_maximum_not_first_come() -> None:
    # "Wig" first takes the red wig (most sentences); "Red wig" can only name it, so "Wig" moves over
    assert credited(["Wig", "Red wig"], list(range(1, 11)), [BOB, RED]) == ({"Bob wig", "Red wig"}, 0)


def test_a_name_counts_only_for_products_overlapping_its_chunk() -> None:
    assert credited(["Solar panel", "Coupon"], list(range(1, 11)), [BOB, RED, PANEL]) == (set(), 2)
    assert credited(["Solar panel"], [10, 11], [BOB, RED, PANEL]) == ({"Solar panel"}, 0)


def test_own_keywords_drop_the_words_of_the_kind() -> None:
    own = {t.name: t.keywords for t in own_keywords([BOB, RED, PANEL])}
    assert own == {"Bob wig": ("bob",), "Red wig": ("red wig",), "Solar panel": ("solar", "panel")}


def test_score_counts_a_product_shown_twice_once() -> None:
    again = GoldTopic("Bob wig", ("wig", "bob"), 21, 30, {})
    chunks = [
        ChunkNames(tuple(range(1, 11)), ("Wig", "Coupon")),
        ChunkNames(tuple(range(11, 21)), ("Sundial",)),
        ChunkNames(tuple(range(21, 31)), ("Bob",)),
    ]
    score = score_names(chunks, [BOB, RED, PANEL, again])
    assert (score.products, score.named, score.apart) == (3, 2, 1)  # red wig by "Wig"; bob by "Bob"
    assert (score.names, score.junk, score.chunks) == (4, 2, 3)  # "Coupon", "Sundial" name nothing
    assert score.share() == pytest.approx(2 / 3)


def test_the_labels_keep_their_splits_and_spans_in_order() -> None:
    labels = load_labels()
    assert {name for name, (split, _) in labels.items() if split == "tune"} == {"EN021", "EN022", "EN023"}
    assert {name for name, (split, _) in labels.items() if split == "report"} == {"EN026", "EN029", "EN030"}
    for name, (_, topics) in labels.items():
        assert all(t.first_id <= t.last_id for t in topics), name
        assert all(a.last_id < b.first_id for a, b in itertools.pairwise(topics)), name
        assert all(k == k.lower() and k.strip() for t in topics for k in t.keywords), name


def test_the_labels_tile_each_transcript() -> None:
    folder = default_data() / "olp-mini" / "EN"
    if not folder.is_dir():
        pytest.skip(f"OLP-MINI data not found at {folder} (set OLP_DATA)")
    for name, (_, topics) in load_labels().items():
        ids = [int(s["segment_id"]) for s in read_transcript(folder / f"{name}.txt", name)]
        outside = [i for i in ids if sum(t.first_id <= i <= t.last_id for t in topics) != 1]
        assert outside == [], name
        assert (topics[0].first_id, topics[-1].last_id) == (ids[0], ids[-1]), name
