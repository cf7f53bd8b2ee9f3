"""Format Checker: organised topics -> TopicDocument, with every repair listed (spec section 3)."""

from __future__ import annotations

from typing import Any

import pytest

from olp.errors import ValidationError
from olp.settings import DEFAULT_ASPECTS
from processors import format_checker
from processors.format_checker import check_document, chunk_done

ECOMMERCE = DEFAULT_ASPECTS["ecommerce"]

SENTENCES = [
    (100, "Hi everyone, welcome back to the live room!"),
    (101, "Today we start with this curly lace front wig, 22 inches."),
    (103, "It is 100% human hair, so you can dye it and curl it."),
    (106, "The original price is 199 dollars, today only 129."),
    (107, "Only 50 pieces left, click the yellow cart now!"),
    (110, "Next up, these white running sneakers."),
    (111, "The sole is super light and the upper is breathable mesh."),
    (115, "They are 59.9 with the coupon, sizes 36 to 44."),
]
TEXT = dict(SENTENCES)
CHUNK: dict[str, Any] = {
    "stream_id": "live-1",
    "chunk_id": "live-1:3",
    "seq": 3,
    "feed": "default",
    "domain": "ecommerce",
    "lang": "en",
    "sentences": [{"id": i, "text": t} for i, t in SENTENCES],
    "is_last": False,
    "created_ms": 1_700_000_000_000,
}


def topic(name: str = "Curly lace front wig", first: int | None = 100, last: int | None = 107,
          final: bool = True, aspects: dict[str, list[int]] | None = None) -> dict[str, Any]:
    return {"name": name, "first_id": first, "last_id": last, "final": final, "aspects": aspects or {}}


def doc_aspects(doc: dict[str, Any]) -> dict[str, list[int]]:
    return {a["name"]: [s["id"] for s in a["sentences"]] for a in doc["aspects"]}


def test_a_clean_answer_becomes_the_document_unchanged() -> None:
    draft = topic(aspects={"Opening": [100], "Order Urging": [107], "Price": [106],
                           "Product Description": [101, 103]})
    doc = check_document(CHUNK, draft, ECOMMERCE, version=3, now_ms=1_700_000_000_500)
    assert doc == {
        "stream_id": "live-1",
        "topic_id": "100",
        "version": 3,
        "name": "Curly lace front wig",
        "first_id": 100,
        "last_id": 107,
        "final": True,
        "domain": "ecommerce",
        "lang": "en",
        "aspects": [
            {"name": "Opening", "sentences": [{"id": 100, "text": TEXT[100]}]},
            {"name": "Order Urging", "sentences": [{"id": 107, "text": TEXT[107]}]},
            {"name": "Price", "sentences": [{"id": 106, "text": TEXT[106]}]},
            {"name": "Product Description",
             "sentences": [{"id": 101, "text": TEXT[101]}, {"id": 103, "text": TEXT[103]}]},
        ],
        "repairs": [],
        "updated_ms": 1_700_000_000_500,
    }


def test_every_kind_of_repair_is_made_and_listed() -> None:
    draft = topic(
        name="  Curly lace\nfront wig ",
        first=107,
        last=100,  # reversed
        aspects={
            "price": [106, 106, 999, 110],  # duplicate, unknown id, id of another topic
            "Shipping": [103],  # unknown aspect: 103 becomes unassigned
            "ORDER URGING": [107, 106],  # 106 already in Price
        },
    )
    doc = check_document(CHUNK, draft, ECOMMERCE, version=3, now_ms=0)
    assert doc["name"] == "Curly lace front wig"
    assert (doc["topic_id"], doc["first_id"], doc["last_id"]) == ("100", 100, 107)
    assert doc_aspects(doc) == {
        "Opening": [],
        "Order Urging": [107],
        "Price": [106],
        "Product Description": [100, 101, 103],  # the fallback aspect takes the unassigned
    }
    assert doc["repairs"] == [
        "reversed span swapped to 100-107",
        "ignored unknown aspects: 'Shipping'",
        "dropped ids not in the topic: [110, 999]",
        "removed duplicate ids: [106]",
        "placed unassigned ids into 'Product Description': [100, 101, 103]",
    ]


def test_span_is_clipped_to_the_chunk_and_snapped_to_sentence_ids() -> None:
    draft = topic(first=50, last=101, aspects={"Opening": [100, 101]})
    clipped = check_document(CHUNK, draft, ECOMMERCE, 3, 0)
    assert (clipped["topic_id"], clipped["first_id"], clipped["last_id"]) == ("100", 100, 101)
    assert clipped["repairs"] == ["span 50-101 clipped to the chunk: 100-101"]
    snapped = check_document(CHUNK, topic(first=102, last=109, aspects={"Price": [103, 106, 107]}),
                             ECOMMERCE, 3, 0)
    assert (snapped["topic_id"], snapped["first_id"], snapped["last_id"]) == ("103", 103, 107)
    assert snapped["repairs"] == ["span 102-109 snapped to sentence ids: 103-107"]


def test_an_unorganised_topic_goes_whole_into_the_fallback_aspect() -> None:
    doc = check_document(CHUNK, topic(name="White running sneakers", first=110, last=115), ECOMMERCE, 3, 0)
    assert doc_aspects(doc) == {"Opening": [], "Order Urging": [], "Price": [],
                                "Product Description": [110, 111, 115]}
    assert doc["repairs"] == ["placed unassigned ids into 'Product Description': [110, 111, 115]"]


def test_fallback_is_the_last_configured_aspect() -> None:
    assert format_checker.fallback_aspect(DEFAULT_ASPECTS["ecommerce"]) == "Product Description"
    assert format_checker.fallback_aspect(DEFAULT_ASPECTS["news"]) == "Facts"
    news_chunk = {**CHUNK, "domain": "news", "lang": "zh"}
    doc = check_document(news_chunk, topic(name="台风登陆", first=110, last=111,
                                           aspects={"Opinions": [111]}), DEFAULT_ASPECTS["news"], 3, 0)
    assert doc_aspects(doc) == {"Future Plans": [], "Assumptions": [], "Opinions": [111], "Facts": [110]}
    assert (doc["domain"], doc["lang"], doc["name"]) == ("news", "zh", "台风登陆")


def test_long_id_lists_in_repairs_are_shortened() -> None:
    sentences = [{"id": i, "text": f"Sentence {i}."} for i in range(30)]
    chunk = {**CHUNK, "sentences": sentences}
    doc = check_document(chunk, topic(first=0, last=29), ECOMMERCE, 3, 0)
    assert doc["repairs"] == [
        "placed unassigned ids into 'Product Description': [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] (+20 more)"
    ]


@pytest.mark.parametrize(
    ("draft", "aspects"),
    [
        (topic(name="   "), ECOMMERCE),
        (topic(first=None), ECOMMERCE),
        (topic(last=None), ECOMMERCE),
        (topic(first=200, last=300), ECOMMERCE),  # outside the chunk
        (topic(first=104, last=105), ECOMMERCE),  # between two sentences
        (topic(), ()),  # no aspects configured
    ],
)
def test_unrepairable_topics_are_rejected(draft: dict[str, Any], aspects: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError):
        check_document(CHUNK, draft, aspects, 3, 0)


def test_final_flag() -> None:
    open_topic = topic(name="White running sneakers", first=110, last=115, final=False)
    assert check_document(CHUNK, open_topic, ECOMMERCE, 3, 0)["final"] is False
    assert check_document({**CHUNK, "is_last": True}, open_topic, ECOMMERCE, 3, 0)["final"] is True
    # Carrying 3 sentences is within a limit of 3, but not of 2: then the topic is closed.
    assert check_document(CHUNK, open_topic, ECOMMERCE, 3, 0, carry_limit=3)["final"] is False
    closed = check_document(CHUNK, open_topic, ECOMMERCE, 3, 0, carry_limit=2)
    assert closed["final"] is True
    assert closed["repairs"][-1] == "closed as final: carry-over of 3 sentences exceeds 2"


def test_chunk_done_points_at_the_unfinished_topic() -> None:
    wig = check_document(CHUNK, topic(first=100, last=107), ECOMMERCE, 3, 0)
    open_topic = topic(name="Sneakers", first=110, last=115, final=False)
    sneakers = check_document(CHUNK, open_topic, ECOMMERCE, 3, 0)
    assert chunk_done(CHUNK, [wig, sneakers]) == {
        "stream_id": "live-1", "chunk_id": "live-1:3", "seq": 3, "next_start_id": 110
    }
    assert chunk_done(CHUNK, [wig])["next_start_id"] is None
    assert chunk_done({**CHUNK, "is_last": True}, [wig, sneakers])["next_start_id"] is None
