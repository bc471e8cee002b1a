"""`torchtutor chat prepare`: corpus -> normalized pairs, vocabulary and splits, as the notes.

The notes' algorithm: read pairs, normalize both sides, keep pairs whose sides both have
fewer than `max_length` words, count words over those pairs, trim words seen fewer than
`min_count` times, then drop each pair holding a trimmed word (`oov="drop"`) or keep it with
those words mapped to UNK (`oov="unk"`). One deviation, on purpose: a side that normalizes
to nothing (say "--") counts as zero words and fails the length filter; the notes would keep
it as a one-word sentence whose word is "".

The vocabulary is counted over all kept pairs, as in the notes (so the counts match them);
the train/valid/test split is by conversation, so no conversation lands in two splits.
"""

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torchtutor.chat.corpus import (
    Pair,
    describe_skipped,
    load_corpus,
    read_pairs_file,
    write_pairs_file,
)
from torchtutor.chat.text import normalize_many
from torchtutor.chat.vocab import Vocab
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write_text

SPLITS = ("train", "valid", "test")


@dataclass
class PrepareConfig:
    corpus: str = "chatterbot"
    max_length: int = 10
    min_count: int = 3
    oov: str = "drop"
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    has_unk: bool = True


@dataclass
class PreparedData:
    vocab: Vocab
    splits: dict[str, list[tuple[str, str]]]   # "train"/"valid"/"test" -> normalized pairs
    stats: dict
    pairs: list[Pair] = field(default_factory=list)   # the raw pairs read, for pairs.tsv


def _check(config: PrepareConfig) -> None:
    if config.oov not in ("drop", "unk"):
        raise UserError(f"--oov must be drop or unk, not {config.oov}")
    if config.oov == "unk" and not config.has_unk:
        raise UserError("--oov unk needs a vocabulary with UNK")
    if config.max_length < 2:
        raise UserError("--max-length must be at least 2 (one word plus EOS)")
    for name in ("valid_fraction", "test_fraction"):
        if not 0.0 <= getattr(config, name) < 1.0:
            raise UserError(f"{name} must be in [0, 1)")
    if config.valid_fraction + config.test_fraction >= 1.0:
        raise UserError("valid and test fractions leave nothing to train on")


def split_conversations(conversations: list[str], valid_fraction: float, test_fraction: float,
                        seed: int) -> dict[str, str]:
    """Conversation id -> split name: a seeded shuffle (a hash of seed and id) cut in three.

    The hash order does not depend on file order or on Python's hash seed. A non-zero
    fraction gets at least one conversation when there are three or more.
    """
    def key(conv: str) -> bytes:
        return hashlib.blake2b(f"{seed}\x00{conv}".encode(), digest_size=8).digest()

    ordered = sorted(conversations, key=key)
    n = len(ordered)

    def share(fraction: float) -> int:
        k = round(n * fraction)
        return max(k, 1) if fraction > 0 and n >= 3 else k

    n_test, n_valid = share(test_fraction), share(valid_fraction)
    out = {conv: "test" for conv in ordered[:n_test]}
    out.update({conv: "valid" for conv in ordered[n_test:n_test + n_valid]})
    out.update({conv: "train" for conv in ordered[n_test + n_valid:]})
    return out


def prepare_data(config: PrepareConfig) -> PreparedData:
    """Run the notes' preparation on `config.corpus`; see the module doc."""
    _check(config)
    corpus = load_corpus(config.corpus)

    # Each Cornell line is both a reply and the next query: normalize each text once.
    texts = list(dict.fromkeys(t for p in corpus.pairs for t in (p.query, p.reply)))
    normalized = dict(zip(texts, normalize_many(texts), strict=True))
    limit = config.max_length
    short: list[tuple[str, str, str]] = []
    empty = 0
    for p in corpus.pairs:
        q = normalized[p.query]
        r = normalized[p.reply]
        if not q or not r:
            empty += 1
        # Words = spaces + 1: normalized text has single spaces and no edge spaces.
        elif q.count(" ") < limit - 1 and r.count(" ") < limit - 1:
            short.append((q, r, p.conversation))

    # One C-level count over every side instead of a Python call per word.
    counts = Counter(" ".join([s for q, r, _ in short for s in (q, r)]).split(" ")) \
        if short else Counter()
    vocab = Vocab(has_unk=config.has_unk)
    vocab.add_counts(counts)
    words_counted = len(vocab.word2count)
    vocab.trim(config.min_count)
    known = vocab.word2index

    # Judge each distinct sentence once.
    has_oov: dict[str, bool] = {}
    for q, r, _ in short:
        for s in (q, r):
            if s not in has_oov:
                has_oov[s] = not all(w in known for w in s.split(" "))
    if config.oov == "drop":
        kept = [t for t in short if not (has_oov[t[0]] or has_oov[t[1]])]
    else:
        kept = short
    if not kept:
        raise UserError(f"no pairs left from {config.corpus} after filtering "
                        f"({len(corpus.pairs)} read, {len(short)} short enough, "
                        f"{len(vocab.word2count)} words seen {config.min_count}+ times); "
                        "try a larger --max-length or a smaller --min-count")

    which = split_conversations(list(dict.fromkeys(c for _, _, c in kept)),
                                config.valid_fraction, config.test_fraction, config.seed)
    splits: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLITS}
    conversations: dict[str, set[str]] = {name: set() for name in SPLITS}
    for q, r, c in kept:
        splits[which[c]].append((q, r))
        conversations[which[c]].add(c)

    stats = {
        "corpus": corpus.name,
        "pairs_read": len(corpus.pairs),
        "pairs_empty_after_normalize": empty,
        "pairs_length_filtered": len(short),
        "words_counted": words_counted,
        "words_kept": len(vocab.word2count),
        "pairs_kept": len(kept),
        "pairs_with_unk": (sum(1 for q, r, _ in kept if has_oov[q] or has_oov[r])
                           if config.oov == "unk" else 0),
        **{f"pairs_{name}": len(splits[name]) for name in SPLITS},
        **{f"conversations_{name}": len(conversations[name]) for name in SPLITS},
        "vocab_size": len(vocab),
        "skipped": dict(corpus.skipped),
        "config": asdict(config),
    }
    return PreparedData(vocab=vocab, splits=splits, stats=stats, pairs=corpus.pairs)


def write_prepared(data: PreparedData, out_dir: str | os.PathLike) -> None:
    """DIR/pairs.tsv (raw pairs, the notes' formatted file), vocab.json, {train,valid,test}.tsv
    (normalized pairs) and stats.json; each written atomically."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if data.pairs:
            write_pairs_file(out / "pairs.tsv", data.pairs)
        for name in SPLITS:
            write_pairs_file(out / f"{name}.tsv", data.splits.get(name, []))
        data.vocab.save(out / "vocab.json")
        atomic_write_text(out / "stats.json", json.dumps(data.stats, indent=2) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write the prepared data into {out}: "
                        f"{exc.strerror or exc}") from None


def load_prepared(out_dir: str | os.PathLike) -> PreparedData:
    """Read back what `write_prepared` wrote (without the raw pairs)."""
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
        splits[name] = ([(p.query, p.reply) for p in read_pairs_file(path).pairs]
                        if path.stat().st_size else []) if path.exists() else []
    return PreparedData(vocab=vocab, splits=splits, stats=stats)


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


def main(args) -> int:
    config = PrepareConfig(corpus=args.corpus, max_length=args.max_length,
                           min_count=args.min_count, oov=args.oov,
                           valid_fraction=args.valid_fraction, test_fraction=args.test_fraction,
                           seed=args.seed)
    start = time.perf_counter()
    data = prepare_data(config)
    write_prepared(data, args.out)
    print(format_stats(data.stats))
    print(f"wrote {args.out} in {time.perf_counter() - start:.2f} s")
    return 0
