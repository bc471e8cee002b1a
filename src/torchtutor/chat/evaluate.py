"""`torchtutor chat evaluate`: how well a trained run does on pairs it did not train on.

Two kinds of numbers. Teacher-forced loss (mean negative log-likelihood per reply token, EOS
included) and its exponential, perplexity, say how likely the model finds the true replies.
BLEU (sacrebleu, against the one true reply), distinct-1/2 (unique n-grams / all n-grams over
all replies: low means the bot says the same thing to everyone) and the average reply length
describe what the chosen decoder actually says.
"""

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sacrebleu
import torch

from torchtutor.chat.batches import index_pairs, make_batch
from torchtutor.chat.decode import DecodeOptions, load_bot, options_from_args, reply_batch
from torchtutor.chat.text import normalize_many, tokenize
from torchtutor.runtime.errors import UserError

BATCH = 64


@dataclass
class EvaluateConfig:
    run: str
    split: str
    corpus: str | None
    as_json: bool
    samples: int
    device: str
    int8: bool
    exact: bool
    options: DecodeOptions


def teacher_forced_loss(model: Any, vocab: Any, pairs: Sequence[tuple[str, str]],
                        batch_size: int = BATCH) -> tuple[float, int]:
    """Mean NLL per target token over normalized `pairs`, and the number of tokens."""
    indexed = [p for p in index_pairs(list(pairs), vocab) if len(p[0]) > 1 and len(p[1]) > 1]
    indexed.sort(key=lambda p: len(p[0]))   # similar lengths together: less padding
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(indexed), batch_size):
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


def evaluate_pairs(bot: Any, pairs: Sequence[tuple[str, str]], options: DecodeOptions,
                   samples: int = 5) -> dict:
    """All the numbers for normalized (query, reply) pairs."""
    if not pairs:
        raise UserError("no pairs to evaluate")
    loss, tokens = teacher_forced_loss(bot.model, bot.vocab, pairs)
    replies = reply_batch(bot, [q for q, _ in pairs], options)
    hypotheses = [" ".join(r.words) for r in replies]
    references = [reference for _, reference in pairs]
    # The texts are already tokenized the way the model sees them, so no second tokenizer.
    bleu = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none").score
    words = [r.words for r in replies]
    picks = sorted(random.Random(0).sample(range(len(pairs)), min(samples, len(pairs))))
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bleu": bleu,
        "distinct_1": distinct_n(words, 1),
        "distinct_2": distinct_n(words, 2),
        "avg_reply_length": sum(map(len, words)) / len(words),
        "pairs": len(pairs),
        "target_tokens": tokens,
        "decoder": options.method,
        "samples": [{"input": pairs[i][0], "reference": pairs[i][1], "reply": replies[i].text}
                    for i in picks],
    }


def corpus_pairs(spec: str, max_length: int) -> tuple[list[tuple[str, str]], int]:
    """Normalized pairs of another corpus that fit the run's length limit; and how many did not
    (the model never saw longer sentences, so they would say little about it)."""
    from torchtutor.chat.corpus import load_corpus

    corpus = load_corpus(spec)
    texts = [t for p in corpus.pairs for t in (p.query, p.reply)]
    normalized = normalize_many(texts)
    pairs, skipped = [], 0
    for q, r in zip(normalized[0::2], normalized[1::2], strict=True):
        if q and r and len(tokenize(q)) < max_length and len(tokenize(r)) < max_length:
            pairs.append((q, r))
        else:
            skipped += 1
    return pairs, skipped


def split_pairs(run_dir: str, config: dict, split: str) -> list[tuple[str, str]]:
    """The run's held-out pairs: from prepared files in the run folder if training saved them,
    else by preparing the run's corpus again with its saved settings (deterministic)."""
    from torchtutor.chat.prepare import PrepareConfig, load_prepared, prepare_data

    for folder in (Path(run_dir) / "data", Path(run_dir)):
        if (folder / f"{split}.tsv").is_file() and (folder / "vocab.json").is_file():
            return load_prepared(folder).splits[split]
    data_config = config.get("data")
    if not isinstance(data_config, dict):
        raise UserError(f"{run_dir}/config.json has no data settings; use --corpus")
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
            ("avg reply length (words)", f"{result['avg_reply_length']:.2f}")]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    if result["samples"]:
        lines.append("")
        lines.append("sample exchanges:")
        for s in result["samples"]:
            lines += [f"  > {s['input']}", f"    true: {s['reference']}",
                      f"    bot:  {s['reply']}"]
    return "\n".join(lines)


def main(args) -> int:
    config = EvaluateConfig(run=args.run, split=args.split, corpus=args.corpus,
                            as_json=args.json, samples=max(args.samples, 0),
                            device=args.device, int8=args.int8, exact=args.exact,
                            options=options_from_args(args))
    bot = load_bot(config.run, config.device, config.int8, config.exact)
    if config.corpus:
        pairs, skipped = corpus_pairs(config.corpus, bot.max_length)
        source = f"corpus {config.corpus}, {skipped} longer or empty pairs left out"
    else:
        pairs = split_pairs(config.run, bot.config, config.split)
        source = f"{config.split} split"
    if not pairs:
        raise UserError(f"no pairs to evaluate in the {source}")
    result = evaluate_pairs(bot, pairs, config.options, config.samples)
    result["source"] = source
    print(json.dumps(result) if config.as_json else format_report(result, source))
    return 0
