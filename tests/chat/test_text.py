"""normalize must equal the notes' regex chain on every input, including the fast paths."""

import random
import re
import unicodedata

from torchtutor.chat.data.text import normalize, normalize_many, tokenize, unicode_to_ascii


def notes_normalize(s: str) -> str:
    # The notes' normalizeString, step by step, as the reference.
    s = "".join(c for c in unicodedata.normalize("NFD", s.lower().strip())
                if unicodedata.category(c) != "Mn")
    s = re.sub(r"([.!?])", r" \1", s)
    s = re.sub(r"[^a-zA-Z.!?]+", r" ", s)
    return re.sub(r"\s+", r" ", s).strip()


CASES = [
    "", "   ", "--", "Hello, World!", "They do not!", "I'm  fine...thanks?!",
    "Café crème brûlée", "Naïve façade — ok", "ÀÉÎÕÜ ñ Ç", "tab\tinside\tline",
    "new\nline", "cr\rlf\r\n", "\x1ahidden\x1a", "a.b!c?d", "  lead and trail  ",
    "numbers 123 and 4.5", "İstanbul", "\u212aelvin", "ﬁne ligature", "ß straße",
    "emoji 😀 smile", "Ελληνικά words", "quote \"x\" and 'y'", "back\\slash",
    "MiXeD CaSe", "...", "?!?", "x", "\u00a0nbsp\u00a0", "\u2028sep\u2029",
]


def test_normalize_matches_notes_on_hand_picked_cases():
    for text in CASES:
        assert normalize(text) == notes_normalize(text), repr(text)


def test_normalize_matches_notes_on_random_text():
    rng = random.Random(0)
    pool = "abcXYZ .,!?'\"-\t\n\r\x1a0123é\u0301ñÅ—…😀\u00a0ﬁ\\"
    for _ in range(3000):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 30)))
        assert normalize(text) == notes_normalize(text), repr(text)


def test_normalize_many_equals_normalize_one_by_one():
    rng = random.Random(1)
    pool = "abc ABC.!?,\n\té—"
    texts = CASES + ["".join(rng.choice(pool) for _ in range(rng.randint(0, 20)))
                     for _ in range(500)]
    assert normalize_many(texts) == [normalize(t) for t in texts]
    assert normalize_many([]) == []


def test_examples_from_the_notes():
    assert normalize("Hello, World!") == "hello world !"
    assert normalize("Aren't you?") == "aren t you ?"
    assert unicode_to_ascii("café") == "cafe"
    assert unicode_to_ascii("plain") == "plain"


def test_tokenize():
    assert tokenize("") == []
    assert tokenize("hello world !") == ["hello", "world", "!"]
    assert tokenize(normalize("  Well... ok ")) == ["well", ".", ".", ".", "ok"]
