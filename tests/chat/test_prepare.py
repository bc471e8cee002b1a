import json

import pytest

from torchtutor.chat.batches import BatchStream, index_pairs
from torchtutor.chat.corpus import Pair, write_pairs_file
from torchtutor.chat.prepare import (
    PrepareConfig,
    load_prepared,
    prepare_data,
    split_conversations,
    write_prepared,
)
from torchtutor.cli import main as cli_main
from torchtutor.runtime.errors import UserError

STATS_KEYS = {"pairs_read", "pairs_length_filtered", "words_counted", "words_kept", "pairs_kept",
              "pairs_train", "pairs_valid", "pairs_test", "skipped"}


def small_corpus(tmp_path):
    """Counts worked out by hand (max_length 4, min_count 2):

    'a b c d' is 4 words (too long); '--' normalizes to nothing; 'rare' is seen once.
    """
    pairs = [
        Pair("Hi!", "Hello there.", "c1"),        # hi ! | hello there .
        Pair("Hello there.", "Hi!", "c1"),
        Pair("a b c d", "hi", "c2"),             # too long
        Pair("--", "hi", "c3"),                  # empty after normalization
        Pair("Hi there", "rare hello", "c4"),    # 'rare' trimmed
        Pair("hello", "hi", "c5"),
    ]
    path = tmp_path / "pairs.tsv"
    write_pairs_file(path, pairs, with_conversation=True)
    return path


def test_counts_follow_the_notes_with_drop(tmp_path):
    data = prepare_data(PrepareConfig(corpus=str(small_corpus(tmp_path)), max_length=4,
                                      min_count=2, valid_fraction=0, test_fraction=0))
    s = data.stats
    assert STATS_KEYS <= set(s)
    assert s["pairs_read"] == 6
    assert s["pairs_empty_after_normalize"] == 1
    assert s["pairs_length_filtered"] == 4
    # words over the 4 short pairs: hi ! hello there . rare -> 6 distinct
    assert s["words_counted"] == 6
    assert s["words_kept"] == 5          # all but 'rare'
    assert s["pairs_kept"] == 3
    assert data.splits["train"] == [("hi !", "hello there ."), ("hello there .", "hi !"),
                                     ("hello", "hi")]
    assert "rare" not in data.vocab and "there" in data.vocab


def test_oov_unk_keeps_the_pair(tmp_path):
    data = prepare_data(PrepareConfig(corpus=str(small_corpus(tmp_path)), max_length=4,
                                      min_count=2, oov="unk", valid_fraction=0,
                                      test_fraction=0))
    assert data.stats["pairs_kept"] == 4 and data.stats["pairs_with_unk"] == 1
    indexed = index_pairs(data.splits["train"], data.vocab)
    assert any(3 in reply for _, reply in indexed)   # UNK id


def test_bad_config_and_nothing_left(tmp_path):
    path = str(small_corpus(tmp_path))
    with pytest.raises(UserError, match="nothing to train"):
        prepare_data(PrepareConfig(corpus=path, valid_fraction=0.5, test_fraction=0.5))
    with pytest.raises(UserError, match="no pairs left"):
        prepare_data(PrepareConfig(corpus=path, min_count=100))


def test_split_is_by_conversation_and_deterministic():
    convs = [f"conv{i}" for i in range(1000)]
    a = split_conversations(convs, 0.1, 0.2, seed=0)
    assert a == split_conversations(list(reversed(convs)), 0.1, 0.2, seed=0)
    assert a != split_conversations(convs, 0.1, 0.2, seed=1)
    names = list(a.values())
    assert (names.count("valid"), names.count("test"), names.count("train")) == (100, 200, 700)
    tiny = split_conversations(["x", "y", "z"], 0.1, 0.1, seed=0)
    assert sorted(tiny.values()) == ["test", "train", "valid"]


def test_chatterbot_default_prepares_splits_without_shared_conversations(tmp_path):
    data = prepare_data(PrepareConfig(min_count=1))
    s = data.stats
    assert s["pairs_read"] > 2000 and s["pairs_kept"] > 500
    assert s["pairs_train"] + s["pairs_valid"] + s["pairs_test"] == s["pairs_kept"]
    assert min(s["pairs_valid"], s["pairs_test"]) > 0
    # every word of every kept pair is in the vocabulary (oov drop)
    for split in data.splits.values():
        for q, r in split:
            assert all(w in data.vocab for w in (q + " " + r).split(" "))
    write_prepared(data, tmp_path / "out")
    back = load_prepared(tmp_path / "out")
    assert back.splits == data.splits
    assert back.vocab.to_dict() == data.vocab.to_dict()
    assert back.stats == json.loads(json.dumps(data.stats))
    stream = BatchStream(index_pairs(back.splits["train"], back.vocab), batch_size=32)
    batch = next(iter(stream))
    assert batch.inputs.shape[1] == 32 and int(batch.lengths.max()) <= 10


def test_cli_prepare_prints_table_and_writes_stats(tmp_path, capsys):
    out = tmp_path / "prep"
    assert cli_main(["chat", "prepare", "--corpus", str(small_corpus(tmp_path)),
                     "--max-length", "4", "--min-count", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pairs read" in printed and "pairs kept" in printed
    stats = json.loads((out / "stats.json").read_text())
    assert STATS_KEYS <= set(stats) and stats["pairs_kept"] == 3
    for name in ("pairs.tsv", "vocab.json", "train.tsv", "valid.tsv", "test.tsv"):
        assert (out / name).is_file()


def test_cli_prepare_fails_with_one_line_when_nothing_usable(tmp_path, capsys):
    (tmp_path / "empty.tsv").write_bytes(b"")
    (tmp_path / "junk.tsv").write_bytes(b"one field only\n\n\xff\xfe\tx\n")
    errors = {}
    for name in ("empty.tsv", "junk.tsv", "missing.tsv"):
        code = cli_main(["chat", "prepare", "--corpus", str(tmp_path / name),
                         "--out", str(tmp_path / "o")])
        err = errors[name] = capsys.readouterr().err
        assert code == 2
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "empty" in errors["empty.tsv"]
    assert "1 lines with wrong field count" in errors["junk.tsv"]
    assert "1 undecodable lines" in errors["junk.tsv"]
    assert "1 blank lines" in errors["junk.tsv"]
    assert "not found" in errors["missing.tsv"]
    assert not (tmp_path / "o").exists()
