import json

import pytest

from torchtutor.chat.data.vocab import EOS, PAD, SOS, UNK, Vocab
from torchtutor.runtime.errors import UserError


def test_specials_and_first_appearance_order():
    v = Vocab()
    assert (PAD, SOS, EOS, UNK) == (0, 1, 2, 3)
    assert len(v) == 4
    v.add_sentence("hello world .")
    v.add_sentence("hello again")
    assert v.word2index == {"hello": 4, "world": 5, ".": 6, "again": 7}
    assert v.word2count == {"hello": 2, "world": 1, ".": 1, "again": 1}
    assert v.index2word[4:] == ["hello", "world", ".", "again"]
    assert len(v) == 8
    assert "hello" in v and "nope" not in v and "PAD" not in v


def test_no_unk_vocab_starts_words_at_three_and_skips_unknowns():
    v = Vocab(has_unk=False)
    v.add_sentence("a b")
    assert v.word2index == {"a": 3, "b": 4}
    assert len(v) == 5
    assert v.encode("a zz b") == ([3, 4], ["zz"])


def test_encode_maps_unknown_to_unk():
    v = Vocab()
    v.add_sentence("a b")
    assert v.encode("a zz b") == ([4, UNK, 5], ["zz"])
    assert v.encode("") == ([], [])


def test_trim_keeps_counts_and_specials_and_reindexes():
    v = Vocab()
    v.add_sentence("rare common common common other other other")
    v.trim(3)
    assert v.word2index == {"common": 4, "other": 5}
    assert v.word2count == {"common": 3, "other": 3}
    assert v.index2word == ["PAD", "SOS", "EOS", "UNK", "common", "other"]
    v.trim(3)   # idempotent
    assert len(v) == 6


def test_decode_stops_at_eos_and_drops_pad_and_sos():
    v = Vocab()
    v.add_sentence("hi there")
    assert v.decode([SOS, 4, UNK, 5, EOS, 4, 4]) == ["hi", "UNK", "there"]
    assert v.decode([4, PAD, 5]) == ["hi", "there"]


def test_save_load_round_trip(tmp_path):
    v = Vocab(has_unk=False)
    v.add_sentence("x y y z z z")
    v.save(tmp_path / "vocab.json")
    w = Vocab.load(tmp_path / "vocab.json")
    assert (w.has_unk, w.word2index, w.word2count, w.index2word) == \
        (v.has_unk, v.word2index, v.word2count, v.index2word)
    assert Vocab.from_dict(v.to_dict()).to_dict() == v.to_dict()


def test_load_reports_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        Vocab.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read"):
        Vocab.load(tmp_path / "bad.json")
    (tmp_path / "odd.json").write_text(json.dumps({"format": 1, "has_unk": True,
                                                   "words": ["a", "a"], "counts": [1, 2]}))
    with pytest.raises(UserError, match="cannot read"):
        Vocab.load(tmp_path / "odd.json")
