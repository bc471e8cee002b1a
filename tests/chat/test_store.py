"""The token store: what `chat prepare` writes equals the pairs held in memory, read back
through memory maps, in either direction; a damaged store is a one-line error."""

import json

import numpy as np
import pytest

from torchtutor.chat.data.batches import index_pairs
from torchtutor.chat.data.corpus import Pair, write_pairs_file
from torchtutor.chat.data.prepare import PrepareConfig, load_prepared, prepare_folder
from torchtutor.chat.data.store import HEADER, TokenStore, token_dtype
from torchtutor.chat.data.vocab import Vocab
from torchtutor.runtime.errors import UserError


def corpus(tmp_path, conversations=40):
    pairs = [Pair(f"Say {w} {i}!", f"ok {w} then" + " ." * (i % 4), f"conv{k}")
             for k in range(conversations) for i, w in enumerate(["hi", "yo", "hey"])]
    path = tmp_path / "pairs.tsv"
    write_pairs_file(path, pairs, with_conversation=True)
    return path


def test_store_holds_every_split_as_index_pairs_would(tmp_path):
    prepare_folder(PrepareConfig(corpus=str(corpus(tmp_path)), min_count=1), tmp_path / "d")
    data = load_prepared(tmp_path / "d")
    store = TokenStore(tmp_path / "d", data.vocab)
    assert store.dtype == np.uint16
    for name in ("train", "valid", "test"):
        split = store.split(name)
        view = split.view()
        expected = index_pairs(data.splits[name], data.vocab)
        assert len(view) == len(expected) > 0
        assert view.gather(np.arange(len(view))) == expected
        backward = split.view("backward").gather(np.arange(len(view)))
        assert backward == [(r, q) for q, r in expected]
        q_len, r_len = view.lengths()
        assert q_len.tolist() == [len(q) for q, _ in expected]
        assert r_len.tolist() == [len(r) for _, r in expected]
        replies = np.bincount([t for _, r in expected for t in r], minlength=len(data.vocab))
        assert split.side_counts(1, len(data.vocab), chunk_pairs=7).tolist() == replies.tolist()
        queries = np.bincount([t for q, _ in expected for t in q], minlength=len(data.vocab))
        assert split.side_counts(0, len(data.vocab), chunk_pairs=5).tolist() == queries.tolist()
    with pytest.raises(ValueError):
        store.split("train").view("sideways")


def test_without_text_files_the_splits_come_from_the_store(tmp_path):
    config = PrepareConfig(corpus=str(corpus(tmp_path)), min_count=1)
    prepare_folder(config, tmp_path / "full")
    prepare_folder(config, tmp_path / "lean", text_files=False)
    assert not list((tmp_path / "lean").glob("*.tsv"))
    full, lean = load_prepared(tmp_path / "full"), load_prepared(tmp_path / "lean")
    assert lean.splits == full.splits and lean.stats == full.stats
    for name in ("train.tokens.bin", "train.offsets.bin", "vocab.json", HEADER):
        assert (tmp_path / "lean" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


def test_a_damaged_store_is_a_one_line_error(tmp_path):
    prepare_folder(PrepareConfig(corpus=str(corpus(tmp_path)), min_count=1), tmp_path / "d")
    vocab = Vocab.load(tmp_path / "d" / "vocab.json")
    other = Vocab()
    other.add_counts({"something": 1, "else": 2})
    with pytest.raises(UserError, match="not written with its vocab.json"):
        TokenStore(tmp_path / "d", other)
    tokens = tmp_path / "d" / "train.tokens.bin"
    tokens.write_bytes(tokens.read_bytes()[:-2])
    with pytest.raises(UserError, match="train.tokens.bin has .* bytes, its header says"):
        TokenStore(tmp_path / "d", vocab)
    head = json.loads((tmp_path / "d" / HEADER).read_text())
    (tmp_path / "d" / HEADER).write_text(json.dumps({**head, "format": 99}))
    with pytest.raises(UserError, match="format 99"):
        TokenStore(tmp_path / "d", vocab)
    (tmp_path / "d" / HEADER).unlink()
    with pytest.raises(UserError, match="holds no token store"):
        TokenStore(tmp_path / "d", vocab)


def test_ids_past_uint16_get_uint32():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
