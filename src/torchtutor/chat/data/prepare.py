"""`torchtutor chat prepare`: corpus -> normalized pairs, vocabulary and splits, as the notes.

The notes' algorithm: read pairs, normalize both sides, keep pairs whose sides both have
fewer than `max_length` words, count words over those pairs, trim words seen fewer than
`min_count` times, then drop each pair holding a trimmed word (`oov="drop"`) or keep it with
those words mapped to UNK (`oov="unk"`). One deviation, on purpose: a side that normalizes
to nothing (say "--") counts as zero words and fails the length filter; the notes would keep
it as a one-word sentence whose word is "".

The vocabulary is counted over all kept pairs, as in the notes (so the counts match them);
the train/valid/test split is by conversation, so no conversation lands in two splits.

`prepare_folder` (what `chat prepare` runs) streams: one pass over the corpus writes each
short pair's word ids (numbered before trimming) to a work folder while counting words, and a
numpy pass over those ids applies the trim, the split and EOS and writes the token store
(chat/store.py). Memory holds one chunk of pairs, the word table, a bounded memo of recent
normalized texts and 8 bytes per conversation, whatever the corpus's size. The split sorts the
conversations by a seeded 64-bit hash of their id and cuts that order in three, so every pair
of a conversation lands in the same split, whatever order the corpus is read in.
"""

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from torchtutor.chat.config import PrepareConfig  # re-exported: the data settings
from torchtutor.chat.data.corpus import (
    Pair,
    PairStream,
    chunked,
    describe_skipped,
    escape_field,
    nothing_usable,
    open_corpus,
    read_pairs_file,
    write_pairs_file,
)
from torchtutor.chat.data.store import (
    HEADER,
    SplitWriter,
    TokenStore,
    header,
    is_store,
    token_dtype,
)
from torchtutor.chat.data.text import normalize_many
from torchtutor.chat.data.vocab import UNK, Vocab
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write_text, remove_stale_temp_folders, temp_folder
from torchtutor.runtime.progress import progress

SPLITS = ("train", "valid", "test")


@dataclass
class PreparedData:
    vocab: Vocab
    splits: dict[str, list[tuple[str, str]]]   # "train"/"valid"/"test" -> normalized pairs
    stats: dict
    pairs: list[Pair] = field(default_factory=list)   # the raw pairs read, for pairs.tsv


def split_conversations(conversations: list[str], valid_fraction: float, test_fraction: float,
                        seed: int) -> dict[str, str]:
    """Conversation id -> split name: a seeded shuffle (a hash of seed and id) cut in three.

    The hash order does not depend on file order or on Python's hash seed. A non-zero
    fraction gets at least one conversation when there are three or more.
    """
    ordered = sorted(conversations, key=lambda conv: conversation_key(seed, conv))
    n_test, n_valid = _shares(len(ordered), valid_fraction, test_fraction)
    out = {conv: "test" for conv in ordered[:n_test]}
    out.update({conv: "valid" for conv in ordered[n_test:n_test + n_valid]})
    out.update({conv: "train" for conv in ordered[n_test + n_valid:]})
    return out


CHUNK_PAIRS = 1 << 16   # pairs normalized and written per step of the streamed passes


def conversation_key(seed: int, conversation: str) -> int:
    """The sort key `split_conversations` orders by, as an unsigned 64-bit integer."""
    digest = hashlib.blake2b(f"{seed}\x00{conversation}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _shares(n: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(test, valid) conversation counts of `split_conversations` for n conversations."""
    def share(fraction: float) -> int:
        k = round(n * fraction)
        return max(k, 1) if fraction > 0 and n >= 3 else k
    return share(test_fraction), share(valid_fraction)


class _Work:
    """Pass 1's output in a work folder: per length-filtered pair its provisional word ids
    (numbered by first appearance, before trimming), its two side lengths, its conversation's
    key and (for the text files) its normalized text."""

    def __init__(self, folder: Path, text_files: bool, pairs_file: bool):
        self.folder = folder
        self.ids = open(folder / "short.ids", "wb")           # noqa: SIM115
        self.lengths = open(folder / "short.lengths", "wb")   # noqa: SIM115
        self.keys = open(folder / "short.keys", "wb")         # noqa: SIM115
        self.text = open(folder / "short.tsv", "w", encoding="utf-8") if text_files else None
        self.raw = open(folder / "pairs.tsv", "w", encoding="utf-8") if pairs_file else None

    def close(self) -> None:
        for f in (self.ids, self.lengths, self.keys, self.text, self.raw):
            if f is not None:
                f.close()


MEMO_TEXTS = 1 << 18   # distinct texts a generation of _NormalizeMemo holds (~50 MB of lines)


class _NormalizeMemo:
    """`normalize_many` that remembers the texts it saw lately. Corpora repeat themselves (each
    Cornell line is both a reply and the next query; "yes." and "what?" recur everywhere), and
    the streamed pass cannot dedup the whole corpus at once as the in-memory one did. Two
    generations of `size` texts each: when the new one fills up the old one is dropped,
    so memory stays bounded and the texts in use stay remembered."""

    def __init__(self, size: int):
        self.size = size
        self.new: dict[str, str] = {}
        self.old: dict[str, str] = {}

    def normalize(self, texts: Iterable[str]) -> dict[str, str]:
        """Each distinct text of `texts` -> its normalized form."""
        found: dict[str, str] = {}
        missing = []
        for text in dict.fromkeys(texts):
            done = self.new.get(text)
            if done is None:
                done = self.old.get(text)
                if done is None:
                    missing.append(text)
                    continue
                self.new[text] = done   # still in use: carry it into the new generation
            found[text] = done
        fresh = dict(zip(missing, normalize_many(missing), strict=True))
        self.new.update(fresh)
        if len(self.new) >= self.size:
            self.old, self.new = self.new, {}
        found.update(fresh)
        return found


def _read_pass(stream: PairStream, config: PrepareConfig, work: _Work, bar) -> dict:
    """Pass 1 over the corpus: normalize, length-filter, number and count words, write `work`.

    Holds one chunk of pairs and the word table; everything else goes to disk.
    """
    limit = config.max_length
    index: dict[str, int] = {}
    counts = np.zeros(0, np.int64)
    read = empty = short = 0
    last_conv, last_key = None, 0
    memo = _NormalizeMemo(MEMO_TEXTS)
    for chunk in stream.lists(CHUNK_PAIRS):
        read += len(chunk)
        if work.raw is not None:
            work.raw.write("".join(escape_field(p.query) + "\t" + escape_field(p.reply) + "\n"
                                   for p in chunk))
        normalized = memo.normalize(t for p in chunk for t in (p.query, p.reply))
        sides: list[str] = []
        keys: list[int] = []
        for p in chunk:
            q = normalized[p.query]
            r = normalized[p.reply]
            if not q or not r:
                empty += 1
            # Words = spaces + 1: normalized text has single spaces and no edge spaces.
            elif q.count(" ") < limit - 1 and r.count(" ") < limit - 1:
                sides += (q, r)
                if p.conversation != last_conv:
                    last_conv, last_key = p.conversation, conversation_key(config.seed,
                                                                           p.conversation)
                keys.append(last_key)
        bar.update(len(chunk))
        if not sides:
            continue
        short += len(keys)
        words = " ".join(sides).split(" ")
        for word in dict.fromkeys(words):   # new words numbered in order of first appearance
            if word not in index:
                index[word] = len(index)
        ids = np.fromiter(map(index.__getitem__, words), np.uint32, count=len(words))
        if len(counts) < len(index):
            counts = np.concatenate([counts, np.zeros(len(index) - len(counts), np.int64)])
        counts += np.bincount(ids, minlength=len(index))
        ids.tofile(work.ids)
        np.fromiter((s.count(" ") + 1 for s in sides), np.int32, count=len(sides)) \
            .tofile(work.lengths)
        np.array(keys, np.uint64).tofile(work.keys)
        if work.text is not None:
            work.text.write("".join(sides[i] + "\t" + sides[i + 1] + "\n"
                                    for i in range(0, len(sides), 2)))
    return {"read": read, "empty": empty, "short": short, "words": list(index),
            "counts": counts}


def _short_chunks(work: Path, short: int) -> Iterator[tuple[np.ndarray, np.ndarray,
                                                            np.ndarray]]:
    """Pass 1's pairs back, a chunk at a time: (provisional ids, side lengths, keys)."""
    with open(work / "short.ids", "rb") as ids_f, open(work / "short.lengths", "rb") as len_f, \
            open(work / "short.keys", "rb") as key_f:
        for first in range(0, short, CHUNK_PAIRS):
            n = min(CHUNK_PAIRS, short - first)
            lengths = np.fromfile(len_f, np.int32, 2 * n)
            ids = np.fromfile(ids_f, np.uint32, int(lengths.sum()))
            yield ids, lengths, np.fromfile(key_f, np.uint64, n)


def _pair_any(flags: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per pair whether any of its tokens is flagged (every side has at least one token)."""
    starts = np.concatenate([[0], np.cumsum(lengths[0::2] + lengths[1::2])[:-1]])
    return np.logical_or.reduceat(flags, starts)


# Every name `prepare_folder` writes into its folder.
WRITES = ("vocab.json", "stats.json", "pairs.tsv", HEADER,
          *(f"{split}{end}" for split in SPLITS for end in (".tsv", ".tokens.bin",
                                                           ".offsets.bin")))


def refuse_foreign_files(out: Path) -> None:
    """Stop before replacing a file that torchtutor did not write: a folder that already
    holds one of the names prepare writes must be a prepared folder (stats.json with the
    settings, written before the header: so also one that a kill caught half-way)."""
    if not out.is_dir():
        return
    try:
        ours = "config" in json.loads((out / "stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        ours = False
    taken = [name for name in WRITES if (out / name).exists()]
    if taken and not ours:
        raise UserError(f"{out} already holds {taken[0]}, which `chat prepare` did not write; "
                        "pick another --out (nothing was changed)")


def prepare_folder(config: PrepareConfig, out_dir: str | os.PathLike,
                   text_files: bool = True, pairs_file: bool | None = None) -> dict:
    """Prepare `config.corpus` into `out_dir` in bounded memory; the stats (see module doc).

    Pass 1 reads the corpus once, writing each length-filtered pair's provisional word ids to
    a work folder and counting words; after trimming, pass 2 goes through those ids with numpy
    (drop or UNK, the split, EOS) into the token store. Memory holds one chunk of pairs, the
    word table and one 8-byte key per conversation. `text_files` also writes the split TSVs
    and `pairs_file` (default: as `text_files`) pairs.tsv, for people; big corpora can do
    without.
    """
    pairs_file = text_files if pairs_file is None else pairs_file
    out = Path(out_dir)
    refuse_foreign_files(out)
    stream = open_corpus(config.corpus)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_folders(out)   # the work folder of a prepare that was killed
        work_dir = temp_folder(out)
    except OSError as exc:
        raise UserError(f"cannot write the prepared data into {out}: "
                        f"{exc.strerror or exc}") from None
    try:
        return _prepare_in(config, stream, out, work_dir, text_files, pairs_file)
    except OSError as exc:
        raise UserError(f"cannot write the prepared data into {out}: "
                        f"{exc.strerror or exc}") from None
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _prepare_in(config: PrepareConfig, stream, out: Path, work_dir: Path,
                text_files: bool, pairs_file: bool) -> dict:
    work = _Work(work_dir, text_files, pairs_file)
    try:
        with progress(desc="prepare: read", unit="pair") as bar:
            first = _read_pass(stream, config, work, bar)
    finally:
        work.close()
    if first["read"] == 0:
        raise nothing_usable(config.corpus, stream.skipped)

    vocab = Vocab(has_unk=config.has_unk)
    vocab.add_counts(dict(zip(first["words"], first["counts"].tolist(), strict=True)))
    words_counted = len(vocab.word2count)
    vocab.trim(config.min_count)
    # Provisional id -> final id: trimming keeps the order of first appearance.
    keep = first["counts"] >= config.min_count
    trimmed = ~keep
    final = np.full(len(keep), UNK if config.oov == "unk" else -1, np.int64)
    final[keep] = vocab.num_special + np.arange(int(keep.sum()))
    short = first["short"]

    # Pass 2a: which pairs stay, and the conversations they belong to.
    kept_mask = np.zeros(short, bool)
    with_unk = 0
    conv_keys = []
    done = 0
    for ids, lengths, keys in _short_chunks(work_dir, short):
        oov = _pair_any(trimmed[ids], lengths)
        kept = ~oov if config.oov == "drop" else np.ones(len(keys), bool)
        with_unk += int(oov.sum()) if config.oov == "unk" else 0
        kept_mask[done:done + len(keys)] = kept
        conv_keys.append(np.unique(keys[kept]))
        done += len(keys)
    pairs_kept = int(kept_mask.sum())
    if not pairs_kept:
        raise UserError(f"no pairs left from {config.corpus} after filtering "
                        f"({first['read']} read, {short} short enough, "
                        f"{len(vocab.word2count)} words seen {config.min_count}+ times); "
                        "try a larger --max-length or a smaller --min-count")
    # The split of `split_conversations`: conversations sorted by key, cut in three.
    ordered = np.unique(np.concatenate(conv_keys))
    n_test, n_valid = _shares(len(ordered), config.valid_fraction, config.test_fraction)
    conversations = {"test": n_test, "valid": n_valid, "train": len(ordered) - n_test - n_valid}
    del conv_keys

    # Pass 2b: each kept pair into its split's store (and text file).
    dtype = token_dtype(len(vocab))
    writers = {name: SplitWriter(work_dir, name, dtype) for name in SPLITS}
    texts = {name: open(work_dir / f"{name}.tsv", "w", encoding="utf-8")  # noqa: SIM115
             for name in SPLITS} if text_files else {}
    short_text = open(work_dir / "short.tsv", encoding="utf-8") if text_files else None  # noqa
    done = 0
    try:
        for ids, lengths, keys in _short_chunks(work_dir, short):
            kept = kept_mask[done:done + len(keys)]
            rank = np.searchsorted(ordered, keys)
            which = np.where(rank < n_test, 0, np.where(rank < n_test + n_valid, 1, 2))
            token_pair = np.repeat(np.arange(len(keys)), lengths[0::2] + lengths[1::2])
            lines = ([short_text.readline() for _ in range(len(keys))]
                     if short_text is not None else [])
            for code, name in ((2, "train"), (1, "valid"), (0, "test")):
                chosen = kept & (which == code)
                if not chosen.any():
                    continue
                writers[name].append(final[ids[chosen[token_pair]]], lengths[np.repeat(chosen, 2)])
                if texts:
                    texts[name].write("".join(line for line, c in zip(lines, chosen, strict=True)
                                              if c))
            done += len(keys)
        entries = {name: writer.finish() for name, writer in writers.items()}
    finally:
        for f in texts.values():
            f.close()
        if short_text is not None:
            short_text.close()

    stats = {
        "corpus": stream.name,
        "pairs_read": first["read"],
        "pairs_empty_after_normalize": first["empty"],
        "pairs_length_filtered": short,
        "words_counted": words_counted,
        "words_kept": len(vocab.word2count),
        "pairs_kept": pairs_kept,
        "pairs_with_unk": with_unk,
        **{f"pairs_{name}": entries[name]["pairs"] for name in SPLITS},
        **{f"conversations_{name}": conversations[name] for name in SPLITS},
        "vocab_size": len(vocab),
        "skipped": stream.skipped,
        "config": asdict(config),
    }
    vocab.save(work_dir / "vocab.json")
    atomic_write_text(work_dir / "stats.json", json.dumps(stats, indent=2) + "\n")
    atomic_write_text(work_dir / HEADER, json.dumps(header(vocab, dtype, entries), indent=2)
                      + "\n")
    names = ["vocab.json", "stats.json"] + (["pairs.tsv"] if pairs_file else []) \
        + ([f"{name}.tsv" for name in SPLITS] if text_files else [])
    _commit(work_dir, out, entries, names)
    return stats


def _commit(work_dir: Path, out: Path, entries: dict, names: list[str]) -> None:
    """Move the finished files into `out`, the store's header last (an old header goes
    first, so a folder caught half-way is never taken for a whole store)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / HEADER).unlink(missing_ok=True)
    moves = [(Path(tmp), out / name) for entry in entries.values()
             for name, tmp in entry["_tmp"].items()]
    moves += [(work_dir / name, out / name) for name in names]
    # stats.json first: from then on the folder is known as prepare's (refuse_foreign_files).
    moves.sort(key=lambda move: move[1].name != "stats.json")
    for stale in ("pairs.tsv", *(f"{name}.tsv" for name in SPLITS)):
        if stale not in names:   # an earlier run's text would be taken for this one's
            (out / stale).unlink(missing_ok=True)
    for source, target in moves:
        os.replace(source, target)
    os.replace(work_dir / HEADER, out / HEADER)


def prepare_data(config: PrepareConfig) -> PreparedData:
    """Run the notes' preparation on `config.corpus` and hold the result in memory (for small
    corpora, tests and benches; `prepare_folder` is the streamed one it runs)."""
    with tempfile.TemporaryDirectory(prefix="torchtutor-prepare-") as tmp:
        prepare_folder(config, tmp)
        data = load_prepared(tmp)
        data.pairs = read_pairs_file(Path(tmp) / "pairs.tsv").pairs
    return data


def write_prepared(data: PreparedData, out_dir: str | os.PathLike) -> None:
    """DIR/pairs.tsv (raw pairs, the notes' formatted file), vocab.json, {train,valid,test}.tsv
    (normalized pairs), stats.json and the token store; each written atomically."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / HEADER).unlink(missing_ok=True)
        if data.pairs:
            write_pairs_file(out / "pairs.tsv", data.pairs)
        dtype = token_dtype(len(data.vocab))
        entries = {}
        for name in SPLITS:
            pairs = data.splits.get(name, [])
            write_pairs_file(out / f"{name}.tsv", pairs)
            writer = SplitWriter(out, name, dtype)
            for chunk in chunked(pairs, CHUNK_PAIRS):
                sides = [s for q, r in chunk for s in (q, r)]
                ids = [data.vocab.encode(s)[0] for s in sides]
                writer.append(np.array([i for side in ids for i in side], np.int64),
                              np.array([len(side) for side in ids], np.int64))
            entries[name] = writer.finish()
            for final_name, tmp in entries[name]["_tmp"].items():
                os.replace(tmp, out / final_name)
        data.vocab.save(out / "vocab.json")
        atomic_write_text(out / "stats.json", json.dumps(data.stats, indent=2) + "\n")
        atomic_write_text(out / HEADER, json.dumps(header(data.vocab, dtype, entries), indent=2)
                          + "\n")
    except OSError as exc:
        raise UserError(f"cannot write the prepared data into {out}: "
                        f"{exc.strerror or exc}") from None


def load_prepared(out_dir: str | os.PathLike) -> PreparedData:
    """Read back a prepared folder's vocabulary, stats and split TSVs (without the raw pairs)."""
    out = Path(out_dir)
    if not (out / "vocab.json").is_file():
        raise UserError(f"{out} is not a prepared data folder (no vocab.json); "
                        "run `torchtutor chat prepare --out DIR` first")
    vocab = Vocab.load(out / "vocab.json")
    try:
        stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {out / 'stats.json'}: {exc}") from None
    splits = {}
    for name in SPLITS:
        path = out / f"{name}.tsv"
        if path.exists():
            splits[name] = ([(p.query, p.reply) for p in read_pairs_file(path).pairs]
                            if path.stat().st_size else [])
        elif is_store(out):
            splits[name] = store_pairs(out, vocab, name)
        else:
            splits[name] = []
    return PreparedData(vocab=vocab, splits=splits, stats=stats)


def store_pairs(folder: Path, vocab: Vocab, split: str) -> list[tuple[str, str]]:
    """A split's pairs as normalized text, decoded from the token store (UNK shows as UNK)."""
    view = TokenStore(folder, vocab).split(split).view()
    return [(" ".join(vocab.decode(q)), " ".join(vocab.decode(r)))
            for q, r in view.gather(np.arange(len(view)))]


def prepared_config(folder: str | os.PathLike) -> PrepareConfig | None:
    """The settings a prepared folder was made with (its stats.json), with `corpus` pointing
    at the folder; None when `folder` holds no token store."""
    folder = Path(folder)
    if not (folder.is_dir() and is_store(folder)):
        return None
    try:
        saved = json.loads((folder / "stats.json").read_text(encoding="utf-8"))["config"]
        known = set(PrepareConfig.__dataclass_fields__)
        return replace(PrepareConfig(**{k: v for k, v in saved.items() if k in known}),
                       corpus=str(folder))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read the settings of {folder} (stats.json): {exc}") from None


def format_stats(stats: dict) -> str:
    """The counts as a two-column table."""
    rows = [("corpus", stats["corpus"]),
            ("pairs read", stats["pairs_read"]),
            ("pairs with both sides < max length", stats["pairs_length_filtered"]),
            ("distinct words counted", stats["words_counted"]),
            ("words kept (min count)", stats["words_kept"]),
            ("pairs kept", stats["pairs_kept"])]
    if stats.get("pairs_with_unk"):
        rows.append(("  of them with UNK", stats["pairs_with_unk"]))
    rows += [(f"  {name}", f"{stats[f'pairs_{name}']:,} pairs, "
                           f"{stats[f'conversations_{name}']:,} conversations")
             for name in SPLITS]
    if stats.get("skipped"):
        rows.append(("skipped while reading", describe_skipped(stats["skipped"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v:,}" if isinstance(v, int) else f"{k:<{width}}  {v}"
                     for k, v in rows)


def main(config: PrepareConfig, out: str, text_files: bool = True) -> int:
    """`chat prepare`: write the prepared folder `out` and print its counts."""
    start = time.perf_counter()
    stats = prepare_folder(config, out, text_files=text_files)
    print(format_stats(stats))
    print(f"wrote {out} in {time.perf_counter() - start:.2f} s")
    return 0
