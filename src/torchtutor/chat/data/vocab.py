"""The vocabulary: special tokens, word counts, index and inverse index, trimming rare words."""

import json
import os
from collections import Counter
from collections.abc import Iterable

from torchtutor.chat.data.text import tokenize
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write_text

PAD, SOS, EOS, UNK = 0, 1, 2, 3
# Upper case, so no normalized (lowercase) word can collide with a special token.
_SPECIAL_NAMES = ["PAD", "SOS", "EOS", "UNK"]
_FORMAT = 1


class Vocab:
    """Word <-> index maps with counts. Indices 0-2 are PAD, SOS, EOS; 3 is UNK when has_unk.

    `word2index` and `word2count` hold real words only; `index2word` holds the specials too,
    so `len(vocab)` is the size of the model's output layer. Words get indices in order of
    first appearance, as in the notes' `Voc`.
    """

    def __init__(self, has_unk: bool = True):
        self.has_unk = has_unk
        self.word2index: dict[str, int] = {}
        self.word2count: dict[str, int] = {}
        self.index2word: list[str] = _SPECIAL_NAMES[: 4 if has_unk else 3]

    @property
    def num_special(self) -> int:
        return 4 if self.has_unk else 3

    def add_sentence(self, normalized: str) -> None:
        self.add_counts(Counter(tokenize(normalized)))

    def add_counts(self, counts: dict[str, int]) -> None:
        """Add many words at once (a Counter over a whole corpus: no per-word Python loop)."""
        word2count = self.word2count
        for word, n in counts.items():
            if word in word2count:
                word2count[word] += n
            else:
                word2count[word] = n
                self.word2index[word] = len(self.index2word)
                self.index2word.append(word)

    def trim(self, min_count: int) -> None:
        """Drop words seen fewer than `min_count` times; keep specials and counts; re-index."""
        kept = [(w, n) for w, n in self.word2count.items() if n >= min_count]
        self.index2word = self.index2word[: self.num_special]
        self.word2index = {}
        self.word2count = {}
        self.add_counts(dict(kept))

    def __len__(self) -> int:
        return len(self.index2word)

    def __contains__(self, word: str) -> bool:
        return word in self.word2index

    def encode(self, normalized: str) -> tuple[list[int], list[str]]:
        """Ids of the words (no EOS) and the words not in the vocabulary.

        Unknown words become UNK when the vocabulary has one, else they are left out.
        """
        ids: list[int] = []
        unknown: list[str] = []
        for word in tokenize(normalized):
            index = self.word2index.get(word)
            if index is None:
                unknown.append(word)
                if self.has_unk:
                    ids.append(UNK)
            else:
                ids.append(index)
        return ids, unknown

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words for ids, stopping at EOS; PAD and SOS are dropped, UNK shows as 'UNK'."""
        words = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i in (PAD, SOS):
                continue
            words.append(self.index2word[i])
        return words

    def to_dict(self) -> dict:
        words = self.index2word[self.num_special:]
        return {"format": _FORMAT, "has_unk": self.has_unk, "words": words,
                "counts": [self.word2count[w] for w in words]}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        try:
            if d["format"] != _FORMAT:
                raise ValueError(f"format {d['format']}")
            vocab = cls(has_unk=bool(d["has_unk"]))
            words, counts = list(d["words"]), [int(n) for n in d["counts"]]
            if len(words) != len(counts) or len(set(words)) != len(words):
                raise ValueError("words and counts do not match")
            if not all(isinstance(w, str) and w for w in words):
                raise ValueError("words must be non-empty strings")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a torchtutor vocabulary ({exc})") from None
        vocab.add_counts(dict(zip(words, counts, strict=True)))
        return vocab

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocab":
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_dict(json.load(f))
        except FileNotFoundError:
            raise UserError(f"vocabulary file {path} not found") from None
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read vocabulary {path}: {exc}") from None
