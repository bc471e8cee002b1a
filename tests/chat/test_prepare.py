import json

import pytest

from torchtutor.chat.data.batches import BatchStream, index_pairs
from torchtutor.chat.data.corpus import Pair, write_pairs_file
from torchtutor.chat.data.prepare import (
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


def test_prepared_splits_never_share_a_conversation(tmp_path):
    names = [chr(97 + k // 26) + chr(97 + k % 26) for k in range(80)]
    pairs = [Pair(f"{n} one", f"{n} two {i}", n) for n in names for i in range(3)]
    write_pairs_file(tmp_path / "p.tsv", pairs, with_conversation=True)
    data = prepare_data(PrepareConfig(corpus=str(tmp_path / "p.tsv"), min_count=1, seed=4))
    owners = {}
    for split, split_pairs in data.splits.items():
        for q, _ in split_pairs:
            owners.setdefault(q.split(" ")[0], set()).add(split)
    assert len(owners) == 80 and all(len(s) == 1 for s in owners.values())
    assert data.stats["conversations_valid"] == data.stats["conversations_test"] == 8
    assert data.stats["pairs_valid"] == data.stats["pairs_test"] == 24


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


def test_the_removed_corpus_flag_is_refused(tmp_path, capsys):
    # chat's --corpus became --data (vision's word) in 0.1; 0.2 dropped the old name
    with pytest.raises(SystemExit) as stopped:
        cli_main(["chat", "prepare", "--corpus", str(small_corpus(tmp_path)),
                  "--out", str(tmp_path / "old")])
    assert stopped.value.code == 2 and "--corpus" in capsys.readouterr().err
    assert not (tmp_path / "old").exists()


def test_cli_prepare_prints_table_and_writes_stats(tmp_path, capsys):
    out = tmp_path / "prep"
    assert cli_main(["chat", "prepare", "--data", str(small_corpus(tmp_path)),
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
        code = cli_main(["chat", "prepare", "--data", str(tmp_path / name),
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
    (tmp_path / "a_file").write_text("x")
    assert cli_main(["chat", "prepare", "--data", str(small_corpus(tmp_path)),
                     "--out", str(tmp_path / "a_file")]) == 2
    assert capsys.readouterr().err.startswith("error: cannot write the prepared data")


def reference_prepare(folder, max_length: int = 10, min_count: int = 3) -> dict:
    """The notes' algorithm written out plainly, straight from the raw Cornell files.

    Deliberately shares no code with torchtutor: its own file parsing (`ast.literal_eval` of
    the id list), the notes' regex normalizer, a dict word count. One documented deviation
    from the notes, the same as prepare.py's: a side that normalizes to nothing has no words
    and fails the length filter.
    """
    import ast
    import re
    import unicodedata

    lines = {}
    with open(folder / "movie_lines.txt", encoding="iso-8859-1", newline="\n") as f:
        for line in f:
            values = line.split(" +++$+++ ")
            if len(values) == 5:
                lines[values[0]] = values[4].strip()
    raw_pairs = []
    with open(folder / "movie_conversations.txt", encoding="iso-8859-1", newline="\n") as f:
        for line in f:
            values = line.split(" +++$+++ ")
            ids = ast.literal_eval(values[3])
            for i in range(len(ids) - 1):
                query, reply = lines[ids[i]], lines[ids[i + 1]]
                if query and reply:
                    raw_pairs.append((query, reply))

    def normalize_string(s):
        s = "".join(c for c in unicodedata.normalize("NFD", s.lower().strip())
                    if unicodedata.category(c) != "Mn")
        s = re.sub(r"([.!?])", r" \1", s)
        s = re.sub(r"[^a-zA-Z.!?]+", r" ", s)
        return re.sub(r"\s+", r" ", s).strip()

    cache = {}
    pairs = []
    for query, reply in raw_pairs:
        for text in (query, reply):
            if text not in cache:
                cache[text] = normalize_string(text)
        pairs.append((cache[query], cache[reply]))

    def short(sentence):
        return sentence != "" and len(sentence.split(" ")) < max_length

    pairs_short = [p for p in pairs if short(p[0]) and short(p[1])]
    counts = {}
    for query, reply in pairs_short:
        for word in query.split(" ") + reply.split(" "):
            counts[word] = counts.get(word, 0) + 1
    kept_words = {w for w, n in counts.items() if n >= min_count}
    kept = [p for p in pairs_short
            if all(w in kept_words for w in p[0].split(" ") + p[1].split(" "))]
    return {"pairs_read": len(raw_pairs), "pairs_length_filtered": len(pairs_short),
            "words_counted": len(counts), "words_kept": len(kept_words),
            "pairs_kept": len(kept), "kept": kept}


@pytest.mark.slow
def test_partial_cornell_counts_equal_an_independent_implementation(shared_data, tmp_path):
    folder = shared_data / "cornell"
    expected = reference_prepare(folder)
    out = tmp_path / "prep"
    assert cli_main(["chat", "prepare", "--data", str(folder), "--out", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    for key in ("pairs_read", "pairs_length_filtered", "words_counted", "words_kept",
                "pairs_kept"):
        assert stats[key] == expected[key], key
    data = load_prepared(out)
    ours = sorted(p for split in data.splits.values() for p in split)
    assert ours == sorted(expected["kept"])
    assert len(data.vocab) == expected["words_kept"] + 4
    assert sum(stats[f"pairs_{s}"] for s in ("train", "valid", "test")) == stats["pairs_kept"]
    assert stats["pairs_valid"] > 0.05 * stats["pairs_kept"]
    assert stats["pairs_test"] > 0.05 * stats["pairs_kept"]


def test_streamed_split_is_split_conversations_and_inputs_stream_alike(tmp_path):
    import gzip

    names = [chr(97 + k // 26) + chr(97 + k % 26) for k in range(300)]
    pairs = [Pair(f"{names[k]} says" + " so" * i, f"{names[k]} hears", f"conv{k}")
             for k in range(300) for i in range(1 + k % 3)]
    write_pairs_file(tmp_path / "p.tsv", pairs, with_conversation=True)
    (tmp_path / "p.tsv.gz").write_bytes(gzip.compress((tmp_path / "p.tsv").read_bytes()))
    (tmp_path / "p.jsonl").write_text("".join(
        json.dumps({"query": p.query, "reply": p.reply, "conversation": p.conversation}) + "\n"
        for p in pairs))
    config = PrepareConfig(corpus=str(tmp_path / "p.tsv"), min_count=1, seed=3,
                           valid_fraction=0.2, test_fraction=0.1)
    data = prepare_data(config)
    expected = split_conversations([f"conv{k}" for k in range(300)], 0.2, 0.1, seed=3)
    owner = {(p.query, p.reply): expected[p.conversation] for p in pairs}
    for name, split in data.splits.items():
        assert split and all(owner[pair] == name for pair in split)
    assert [data.stats[f"conversations_{n}"] for n in ("train", "valid", "test")] == [210, 60, 30]
    for other in ("p.tsv.gz", "p.jsonl"):
        again = prepare_data(PrepareConfig(**{**config.__dict__,
                                              "corpus": str(tmp_path / other)}))
        assert again.splits == data.splits and again.vocab.to_dict() == data.vocab.to_dict()


def test_small_reads_and_a_small_memo_write_the_same_folder(tmp_path, monkeypatch):
    # The normalization memo forgets (two generations of 3 texts) and the file is read in
    # 50-byte blocks: the prepared files are byte for byte those of the default sizes.
    import torchtutor.chat.data.corpus as corpus_mod
    import torchtutor.chat.data.prepare as prepare_mod

    texts = ["Hi!", "Hello there.", "Café, s'il vous plaît?", "no...", "Hi!", "what?", "--"]
    pairs = [Pair(texts[k % 7], texts[(3 * k + 1) % 7], f"c{k // 4}") for k in range(90)]
    write_pairs_file(tmp_path / "p.tsv", pairs, with_conversation=True)
    config = PrepareConfig(corpus=str(tmp_path / "p.tsv"), min_count=1)
    prepare_mod.prepare_folder(config, tmp_path / "default")
    monkeypatch.setattr(prepare_mod, "MEMO_TEXTS", 3)
    monkeypatch.setattr(corpus_mod, "_BLOCK_BYTES", 50)
    prepare_mod.prepare_folder(config, tmp_path / "small")
    names = sorted(p.name for p in (tmp_path / "default").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "small").iterdir()) and len(names) > 8
    for name in names:
        if name != "stats.json":   # (it names the corpus, the same file in both)
            assert (tmp_path / "small" / name).read_bytes() == \
                (tmp_path / "default" / name).read_bytes(), name
    stats = [json.loads((tmp_path / d / "stats.json").read_text()) for d in ("default", "small")]
    assert stats[0] == stats[1] and stats[0]["pairs_kept"] > 0


def test_a_killed_prepares_work_folder_goes_with_the_next_prepare(tmp_path):
    import subprocess

    from torchtutor.chat.data.prepare import prepare_folder

    out = tmp_path / "prep"
    # What a kill -9 leaves: the work folder of a process that no longer runs.
    finished = subprocess.Popen(["true"])
    finished.wait()
    stale = tmp_path / f".prep.{finished.pid}.abcd1234.tmp"
    (stale / "part").mkdir(parents=True)
    config = PrepareConfig(corpus=str(small_corpus(tmp_path)), max_length=4, min_count=2)
    prepare_folder(config, out)
    assert not stale.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".prep.")]
    assert (out / "vocab.json").is_file()
