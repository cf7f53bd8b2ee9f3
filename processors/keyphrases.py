"""Candidate topic names taken from a transcript's own words, for the encoder's Topic Finder.

An encoder cannot invent a name, but it can pick the phrase the speaker says ("human hair wig",
"chili crisp"). The candidates are word n-grams that neither start nor end with a stop word
(KeyBERT's candidate rule); for languages written without spaces, character n-grams of a run of
CJK characters that neither start nor end with a function character. Each candidate carries how
often its words recur in the text: a product is named again and again while the host sells it,
so recurrence separates its name from a phrase said once. Pure text, no vectors: the similarity
half lives in processors/similarity.py.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence

_STOP_WORDS = """a about above after again against all am an and any are aren't as at be because been before
    being below between both but by can can't could couldn't did didn't do does doesn't doing don't
    down during each few for from further had hadn't has hasn't have haven't having he he'd he'll
    he's her here here's hers herself him himself his how how's i i'd i'll i'm i've if in into is
    isn't it it's its itself let's me more most mustn't my myself no nor not of off on once only or
    other ought our ours ourselves out over own same shan't she she'd she'll she's should shouldn't
    so some such than that that's the their theirs them themselves then there there's these they
    they'd they'll they're they've this those through to too under until up very was wasn't we
    we'd we'll we're we've were weren't what what's when when's where where's which while who
    who's whom why why's with won't would wouldn't you you'd you'll you're you've your yours
    yourself yourselves also just like really okay ok yeah yes oh um uh hmm ah wow hey hi hello
    gonna wanna gotta got get gets go going goes went come comes coming know think want need say
    said see look let make made right well now one two three four five six seven eight nine ten
    thing things something anything everything lot lots little much many way really actually
    literally basically ahead huh alright ooh sorry guys girl girls y'all ya everybody everyone
    anybody somebody today tonight
    will can may might must shall us please thank thanks good great nice new little big
    still even back again kind sort maybe sure time day year years people first last next number
    show love tell try put take give use talk mean feel along across around every another
    stuff guy man honey babe im youre lets dont thats ive theyre whats gorgeous beautiful amazing
    awesome pretty cute perfect obsessed absolutely definitely totally super easy best better
    love loving eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen
    twenty thirty forty fifty sixty seventy eighty ninety hundred
    thousand dollar dollars bucks percent price prices order orders link links cart sale sales
    discount deal deals shipping buy buying sell check code stock enough color colour colors colours
    size sizes quality red white black brown pink grey gray blue green yellow purple dark affordable
    cheap expensive popular rare final favorite favourite heavier lighter wear carry inside side
    coupon coupons voucher vouchers bundle bundles item items product products piece pieces free
    gift gifts offer offers checkout click timer clock minute minutes second seconds hour hours
    left already chance welcome live stream streams chat host viewers follow followers away giving
    given gave giveaway giveaways purchase bought brought sold comment question shout shoutout
    subscribe share tap heart likes ladies gentlemen fam friend friends sis babes darling hun queen
    bestie yep yup nope hold omg lol city full inch inches ounce oz pound lb lbs gram kg ml liter
    litre cm mm foot feet"""
STOP_WORDS = frozenset(_STOP_WORDS.split())
"""English words that do not begin or end a name: function words, the fillers of spoken talk
(a live host says "okay you guys" more often than any product's name), numbers, the words of
selling any product (price, coupon, bundle, order, link, colour, size, "item number two"), which
name an aspect of a product, not the product, the words of the stream itself (live, chat,
timer, "welcome", "shout out to", "hold on, ladies"), units of measure ("sixteen inches"), and
the adjectives a host praises every product with. `is_stop_word` also takes their inflections."""

INNER_WORDS = frozenset({"of", "and", "for", "with", "the", "a", "in", "on", "to", "&"})
"""Stop words a name may hold inside ("bottle of wine", "salt and pepper"); any other (a pronoun,
a filler) marks a piece of a sentence, not a name."""

CJK_STOP_CHARS = frozenset(
    "的了是在我你他她它们这那就也都和与及吗呢啊吧哦嗯呀哈个把被给让对很还又再要会能说有没不一款些种下"
)
"""Chinese function characters a name does not begin or end with."""

MAX_WORDS = 4
CJK_CHARS = (2, 6)
"""Length range of a Chinese candidate, in characters (a product name is a few characters)."""

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?", re.UNICODE)
_CJK_RUN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")


def writes_without_spaces(lang: str) -> bool:
    return lang.split("-")[0].lower() in ("zh", "ja")


def words(text: str) -> list[str]:
    """The text's words, lower-cased (curly apostrophes made straight, so "don’t" is a stop word)."""
    return [w.replace("’", "'") for w in _WORD.findall(text.casefold())]


def singular(word: str) -> str:
    """An English plural's singular, by its spelling ("cups" -> "cup", "batteries" -> "battery",
    "boxes" -> "box"): a host says "this cup" and "one hundred cups left", and both say the name."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@functools.lru_cache(maxsize=65536)
def is_stop_word(word: str) -> bool:
    """A stop word or a plural or past tense of one: "ordered", "purchases", "looks", "comments"
    (a host's "you ordered" or "with those purchases" names no product)."""
    if word in STOP_WORDS or singular(word) in STOP_WORDS or (word.endswith("s") and word[:-1] in STOP_WORDS):
        return True
    return len(word) > 4 and word.endswith("ed") and (word[:-2] in STOP_WORDS or word[:-1] in STOP_WORDS)


def _word_grams(text: str, max_words: int) -> set[str]:
    tokens = words(text)
    grams = set()
    for n in range(1, max_words + 1):
        for i in range(len(tokens) - n + 1):
            gram = tokens[i : i + n]
            if is_stop_word(gram[0]) or is_stop_word(gram[-1]) or any(t.isdigit() for t in gram):
                continue
            if any(is_stop_word(t) and t not in INNER_WORDS for t in gram[1:-1]):
                continue
            if n == 1 and len(gram[0]) < 3:  # "tv" is a name, but most two-letter words are noise
                continue
            grams.add(" ".join(gram))
    return grams


def _char_grams(text: str, sizes: tuple[int, int]) -> set[str]:
    grams = set()
    for run in _CJK_RUN.findall(text):
        for n in range(sizes[0], sizes[1] + 1):
            for i in range(len(run) - n + 1):
                gram = run[i : i + n]
                if gram[0] not in CJK_STOP_CHARS and gram[-1] not in CJK_STOP_CHARS:
                    grams.add(gram)
    return grams


def phrase_units(phrase: str, lang: str) -> list[str]:
    """The units whose recurrence scores a phrase: its non-stop words, or its characters."""
    if writes_without_spaces(lang):
        return [c for c in phrase if c not in CJK_STOP_CHARS]
    return [singular(w) for w in phrase.split() if not is_stop_word(w)]


def candidate_phrases(sentences: Sequence[str], lang: str) -> Counter[str]:
    """Candidate names -> the number of sentences that say them."""
    counts: Counter[str] = Counter()
    for text in sentences:
        if writes_without_spaces(lang):
            counts.update(_char_grams(text, CJK_CHARS))
        else:
            counts.update(_word_grams(text, MAX_WORDS))
    return counts


def unit_sentences(sentences: Sequence[str], lang: str) -> Counter[str]:
    """Each unit (a word in its singular, or a character) -> the number of sentences that say it."""
    said: Counter[str] = Counter()
    for text in sentences:
        if writes_without_spaces(lang):
            said.update(set(phrase_units(text, lang)))
        else:
            said.update({singular(w) for w in words(text)})
    return said


def recurrence(
    phrases: Sequence[str], sentences: Sequence[str], lang: str, said: Counter[str] | None = None
) -> list[float]:
    """Per phrase, the share of the sentences that say its most said unit: a name whose head word
    ("wig") runs through the segment scores high, one said in passing low; the qualifiers
    ("human hair") are chosen by the similarity half of the score. `said`: the sentences'
    `unit_sentences`, when the caller has them already."""
    said = unit_sentences(sentences, lang) if said is None else said
    total = max(len(sentences), 1)
    return [max(said[u] for u in phrase_units(phrase, lang) or [phrase]) / total for phrase in phrases]


def shortlist(
    counts: Counter[str], sentences: Sequence[str], lang: str, limit: int, said: Counter[str] | None = None
) -> list[str]:
    """The `limit` candidates whose units recur most (ties: the longer phrase, said more often):
    only these are embedded, which bounds the encoder's cost per segment. A phrase of several
    words must be said in two sentences at least (when any phrase is), or be a repeated name with
    a repeated head word after it: a host says the full name once ("this human hair wig") and its
    parts again ("real human hair", "the wig"); a piece of a sentence is not repeated ("if your
    hair looks good" is no name though "hair" and "looks" recur). Chinese phrases must be said
    twice whole. `said`: the sentences' `unit_sentences`, when the caller has them already."""
    said = unit_sentences(sentences, lang) if said is None else said

    def repeated(phrase: str) -> bool:
        units = phrase_units(phrase, lang)
        if counts[phrase] >= 2 or len(units) <= 1:
            return True
        if writes_without_spaces(lang) or len(units) < 3 or len(units) != len(phrase.split()):
            return False
        # "this human hair wig" once, then "real human hair" twice and "the wig" twice
        qualifier = " ".join(phrase.split()[:-1])
        return counts[qualifier] >= 2 and said[units[-1]] >= 2

    phrases = [p for p in counts if repeated(p)] or list(counts)
    shares = recurrence(phrases, sentences, lang, said)
    ranked = sorted(
        zip(phrases, shares, strict=True), key=lambda p: (-p[1], -len(p[0].split()), -counts[p[0]], p[0])
    )
    return [p for p, _ in ranked[:limit]]


def continues(name: str, sentences: Sequence[str], lang: str, said: Counter[str] | None = None) -> bool:
    """Do `sentences` still talk about the topic `name`d before them: do two of them say its head
    (the last unit of the name: "wig" of "human hair wig")? For Chinese, the whole name.
    `said`: the sentences' `unit_sentences`, when the caller has them already."""
    if writes_without_spaces(lang):
        return sum(name in s for s in sentences) >= 2
    units = phrase_units(name.casefold(), lang)
    said = unit_sentences(sentences, lang) if said is None else said
    return bool(units) and said[units[-1]] >= 2
