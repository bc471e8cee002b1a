"""`torchtutor chat evaluate`: how well a trained run does on pairs it did not train on.

Two kinds of numbers. Teacher-forced loss (mean negative log-likelihood per reply token, EOS
included) and its exponential, perplexity, say how likely the model finds the true replies.
The rest describe what the chosen decoder actually says:
- BLEU (sacrebleu, against the one true reply; both sides in the model's token form);
- distinct-1/2: unique n-grams / all n-grams over all replies (low: the same words to all);
- generic_rate: the share of replies equal to the most frequent one ("i don t know .");
- unique_replies: distinct replies / replies;
- stutter_rate: the share of replies with a token twice in a row or a bigram said twice;
- avg_reply_length in words;
- relevance: the mean per-token log p(query | reply) under the run's backward model, which a
  generic reply cannot win (it predicts no query in particular). A decoder that reranks with
  that same model (--rerank mmi) partly optimises it, so the report marks it then.
"""

import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sacrebleu
import torch

from torchtutor.chat import run_dir as rd
from torchtutor.chat.data.batches import index_pairs, make_batch
from torchtutor.chat.data.text import normalize_many, tokenize
from torchtutor.chat.data.vocab import EOS, Vocab
from torchtutor.chat.fast.int8 import load_chatbot
from torchtutor.chat.infer.chatbot import Chatbot
from torchtutor.chat.infer.options import DecodeOptions
from torchtutor.chat.infer.rerank import sequence_log_probs
from torchtutor.chat.model import Seq2Seq
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.progress import progress, waiting
from torchtutor.runtime.report import rounded

BATCH = 64


@dataclass
class EvaluateConfig:
    """`chat evaluate`'s options (cli.py builds it from the flags): the run's `split`, or
    another `corpus`; `samples` exchanges shown."""
    run: str
    split: str
    corpus: str | None
    as_json: bool
    samples: int
    device: str
    int8: bool
    options: DecodeOptions
    limit: int | None = None     # score this many of the pairs, drawn by a fixed seed


def teacher_forced_loss(model: Seq2Seq, vocab: Vocab, pairs: Sequence[tuple[str, str]],
                        batch_size: int = BATCH) -> tuple[float, int]:
    """Mean NLL per target token over normalized `pairs`, and the number of tokens."""
    indexed = [p for p in index_pairs(list(pairs), vocab) if len(p[0]) > 1 and len(p[1]) > 1]
    indexed.sort(key=lambda p: len(p[0]))   # similar lengths together: less padding
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for start in progress(range(0, len(indexed), batch_size), desc="evaluate: loss",
                              unit="batch"):
            batch = make_batch(indexed[start:start + batch_size]).to(device)
            outputs, mask, hidden = model.encode(batch.inputs, batch.lengths)
            log_probs = model.decode_teacher_forced(batch.targets, hidden, outputs, mask)
            nll = -log_probs.gather(2, batch.targets.unsqueeze(2)).squeeze(2)
            total += float(nll[batch.mask].double().sum())
            tokens += int(batch.mask.sum())
    if tokens == 0:
        raise UserError("no pair has a known word on both sides; nothing to evaluate")
    return total / tokens, tokens


def distinct_n(replies: Sequence[Sequence[str]], n: int) -> float:
    """Unique n-grams / all n-grams over all replies (0 when there are none)."""
    grams = [tuple(words[i:i + n]) for words in replies for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def generic_rate(replies: Sequence[Sequence[str]]) -> float:
    """The share of replies equal to the single most frequent reply."""
    counts = Counter(tuple(words) for words in replies)
    return counts.most_common(1)[0][1] / len(replies) if replies else 0.0


def unique_replies(replies: Sequence[Sequence[str]]) -> float:
    """Distinct replies / replies."""
    return len({tuple(words) for words in replies}) / len(replies) if replies else 0.0


def stutters(words: Sequence[str]) -> bool:
    """A token twice in a row ("fine fine", "! !") or a bigram said twice."""
    bigrams = list(zip(words, words[1:], strict=False))
    return any(a == b for a, b in bigrams) or len(set(bigrams)) < len(bigrams)


def stutter_rate(replies: Sequence[Sequence[str]]) -> float:
    """The share of replies that stutter (`stutters`)."""
    return sum(map(stutters, replies)) / len(replies) if replies else 0.0


def bleu(replies: Sequence[Sequence[str]], references: Sequence[str]) -> float:
    """Corpus BLEU of token lists against normalized references (one each), both already in
    the model's token form, so sacrebleu tokenizes neither (and is told so: force=True)."""
    return sacrebleu.corpus_bleu([" ".join(w) for w in replies], [list(references)],
                                 tokenize="none", force=True).score


def relevance(backward: Seq2Seq, vocab: Vocab, queries: Sequence[str],
              replies: Sequence[Sequence[int]]) -> float:
    """Mean per-token log p(query | reply) under `backward` (reply ids with EOS)."""
    targets = [vocab.encode(q)[0] + [EOS] for q in queries]
    scores = sequence_log_probs(backward, [list(r) for r in replies], targets)
    return sum(s / len(t) for s, t in zip(scores, targets, strict=True)) / len(targets)


def reply_measures(replies: Sequence[Sequence[str]], references: Sequence[str]) -> dict:
    """BLEU, distinct-1/2, generic rate, unique replies and length of decoded replies."""
    return {"bleu": bleu(replies, references),
            "distinct_1": distinct_n(replies, 1), "distinct_2": distinct_n(replies, 2),
            "generic_rate": generic_rate(replies), "unique_replies": unique_replies(replies),
            "stutter_rate": stutter_rate(replies),
            "avg_reply_length": sum(map(len, replies)) / max(len(replies), 1)}


def evaluate_pairs(bot: Chatbot, pairs: Sequence[tuple[str, str]], options: DecodeOptions,
                   samples: int = 5) -> dict:
    """All the numbers for normalized (query, reply) pairs."""
    if not pairs:
        raise UserError("no pairs to evaluate")
    loss, tokens = teacher_forced_loss(bot.model, bot.vocab, pairs)
    with progress(total=len(pairs), desc="evaluate: replies", unit="pair") as bar:
        replies = bot.reply_batch([q for q, _ in pairs], options, on_chunk=bar.update)
    words = [r.words for r in replies]
    picks = sorted(random.Random(0).sample(range(len(pairs)), min(samples, len(pairs))))
    result = {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        **reply_measures(words, [reference for _, reference in pairs]),
        "relevance": None,
        "relevance_is_reranked_on": options.rerank == "mmi",
        "pairs": len(pairs),
        "target_tokens": tokens,
        "decoder": options.method + (" + mmi" if options.rerank == "mmi" else ""),
        "samples": [{"input": pairs[i][0], "reference": pairs[i][1], "reply": replies[i].text}
                    for i in picks],
    }
    if bot.backward is not None:
        reply_ids = [bot.vocab.encode(" ".join(w))[0] + [EOS] for w in words]
        result["relevance"] = relevance(bot.backward, bot.vocab, [q for q, _ in pairs],
                                        reply_ids)
    return result


def corpus_pairs(spec: str, max_length: int) -> tuple[list[tuple[str, str]], int]:
    """Normalized pairs of another corpus that fit the run's length limit; and how many did not
    (the model never saw longer sentences, so they would say little about it)."""
    from torchtutor.chat.data.corpus import nothing_usable, open_corpus

    stream = open_corpus(spec)
    read = list(progress(stream, desc="evaluate: read", unit="pair"))
    if not read:
        raise nothing_usable(spec, stream.skipped)
    texts = [t for p in read for t in (p.query, p.reply)]
    normalized = normalize_many(texts)
    pairs, skipped = [], 0
    for q, r in zip(normalized[0::2], normalized[1::2], strict=True):
        if q and r and len(tokenize(q)) < max_length and len(tokenize(r)) < max_length:
            pairs.append((q, r))
        else:
            skipped += 1
    return pairs, skipped


def split_pairs(run_dir: str, config: dict, split: str) -> list[tuple[str, str]]:
    """The run's held-out pairs, from the token store training read (chat.data.train_data):
    RUN_DIR/data, where a corpus was prepared for the run, or the prepared folder named as
    its corpus (a backward model's is its forward run's data). A run whose data folder is
    gone gets its corpus prepared again with its saved settings (deterministic)."""
    from torchtutor.chat.data.prepare import PrepareConfig, load_prepared, prepare_data
    from torchtutor.chat.data.store import is_store
    from torchtutor.chat.data.train_data import RUN_DATA

    data_config = config.get("data")
    folders = [Path(run_dir) / RUN_DATA]
    if isinstance(data_config, dict) and data_config.get("corpus"):
        folders.append(Path(str(data_config["corpus"])).expanduser())
    for folder in folders:
        if is_store(folder):
            return load_prepared(folder).splits[split]
    if not isinstance(data_config, dict):
        raise UserError(f"{run_dir}/config.json has no data settings; use --data")
    known = set(PrepareConfig.__dataclass_fields__)
    return prepare_data(PrepareConfig(**{k: v for k, v in data_config.items()
                                         if k in known})).splits[split]


def format_report(result: dict, source: str) -> str:
    rows = [("pairs", f"{result['pairs']} ({source})"),
            ("loss (teacher-forced)", f"{result['loss']:.4f}"),
            ("perplexity", f"{result['perplexity']:.2f}"),
            (f"BLEU ({result['decoder']})", f"{result['bleu']:.2f}"),
            ("distinct-1", f"{result['distinct_1']:.4f}"),
            ("distinct-2", f"{result['distinct_2']:.4f}"),
            ("generic rate", f"{result['generic_rate']:.1%}"),
            ("unique replies", f"{result['unique_replies']:.1%}"),
            ("stuttering replies", f"{result['stutter_rate']:.1%}"),
            ("avg reply length (words)", f"{result['avg_reply_length']:.2f}")]
    if result["relevance"] is not None:
        note = " (the decoder reranks with it)" if result["relevance_is_reranked_on"] else ""
        rows.append(("relevance, log p(q|r) per token", f"{result['relevance']:.4f}{note}"))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    if result["samples"]:
        lines.append("")
        lines.append("sample exchanges:")
        for s in result["samples"]:
            lines += [f"  > {s['input']}", f"    true: {s['reference']}",
                      f"    bot:  {s['reply']}"]
    return "\n".join(lines)


def main(config: EvaluateConfig) -> int:
    with waiting(f"loading {config.run}"):   # the model and the backward model
        bot = load_chatbot(config.run, config.device, config.int8)
    if config.corpus:
        pairs, skipped = corpus_pairs(config.corpus, bot.max_length)
        source = f"corpus {config.corpus}, {skipped} longer or empty pairs left out"
    else:
        pairs = split_pairs(config.run, rd.read_config(config.run), config.split)
        source = f"{config.split} split"
    if not pairs:
        # A small corpus (the demo's) can leave a split empty: say what works instead.
        hint = ("try --split train, or --data PATH" if not config.corpus
                else "try a corpus of shorter sentences")
        raise UserError(f"no pairs to evaluate in the {source}; {hint}")
    if config.limit is not None and len(pairs) > config.limit:
        # A fixed draw, not the first N: a split or corpus file may be ordered by movie or topic.
        kept = sorted(random.Random(0).sample(range(len(pairs)), config.limit))
        source += f", {config.limit} of its {len(pairs)} pairs (--limit)"
        pairs = [pairs[i] for i in kept]
    result = evaluate_pairs(bot, pairs, config.options, config.samples)
    result["source"] = source
    print(json.dumps(rounded(result)) if config.as_json else format_report(result, source))
    return 0
