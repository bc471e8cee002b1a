"""Text normalization exactly as the tutorial notes' `normalizeString`, made fast.

The notes: lowercase and strip, unicode -> ASCII (NFD, drop combining marks), put a space
before each of `.!?`, turn every run of other non-letters into one space, collapse spaces,
strip. `normalize` gives the same string as that regex chain (a test checks it against a
literal copy of the chain), but most corpus lines are pure ASCII, so it skips the per-character
unicode pass for them and does the rest with one `str.translate` and one split/join instead of
three regex passes.
"""

import re
import unicodedata

_PUNCT = re.compile(r"([.!?])")
_NON_LETTER = re.compile(r"[^a-zA-Z.!?]+")
_SPACES = re.compile(r"\s+")

# For lowercased ASCII bytes: letters, `.!?` and the newline that joins texts in
# `normalize_many` stay; every other byte becomes a space (runs collapse in the split/join).
_KEEP = b"abcdefghijklmnopqrstuvwxyz.!?\n"
_BYTE_TABLE = bytes(c if c in _KEEP else 32 for c in range(256))


def unicode_to_ascii(text: str) -> str:
    """Decompose (NFD) and drop the combining marks: 'café' -> 'cafe'. Other non-ASCII stays."""
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if unicodedata.category(c) != "Mn")


def _normalize_slow(text: str) -> str:
    # The notes' chain, step by step; used for text that is not ASCII after unicode_to_ascii.
    text = unicode_to_ascii(text.lower().strip())
    text = _PUNCT.sub(r" \1", text)
    text = _NON_LETTER.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _letters_and_marks(ascii_text: str) -> str:
    # Non-letters -> space in one bytes.translate (a fixed 256-byte table, the C fast path),
    # then a space before each `.!?`; the caller collapses spaces.
    kept = ascii_text.lower().encode("ascii").translate(_BYTE_TABLE).decode("ascii")
    return kept.replace(".", " .").replace("!", " !").replace("?", " ?")


def normalize(text: str) -> str:
    """The notes' normalizeString: 'Hello, World!' -> 'hello world !'."""
    if not text.isascii() or "\n" in text:
        return _normalize_slow(text)
    return " ".join(_letters_and_marks(text).split())


def normalize_many(texts: list[str]) -> list[str]:
    """`[normalize(t) for t in texts]`, with the per-call work done once on all texts joined."""
    simple = [i for i, t in enumerate(texts) if t.isascii() and "\n" not in t]
    joined = _letters_and_marks("\n".join(texts[i] for i in simple)).split("\n") if simple \
        else []
    out = [""] * len(texts)
    for i, kept in zip(simple, joined, strict=True):
        out[i] = " ".join(kept.split())
    if len(simple) < len(texts):
        done = set(simple)
        for i, t in enumerate(texts):
            if i not in done:
                out[i] = _normalize_slow(t)
    return out


def tokenize(normalized: str) -> list[str]:
    """Words of a normalized sentence (split on single spaces; '' has no words)."""
    return normalized.split(" ") if normalized else []
