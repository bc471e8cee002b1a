"""Reply quality of the chatbot's decoders, side by side, on a run's held-out split.

For a run trained by `chat train` (with its backward model, RUN/backward) it decodes every
query of the split with each decoder and prints one table: teacher-forced perplexity (the
model's, the same for every decoder), BLEU against the true replies, distinct-1/2, generic rate
(share of replies equal to the most frequent one), unique replies, relevance (mean per-token
log p(query | reply) under the backward model; the MMI decoders rerank with that same model,
so their relevance is marked) and the median milliseconds per reply at batch 1 (over
`--latency-queries` queries, one at a time). The true replies themselves are a row too.
A second table times greedy, the default decoder on `--int8` copies (approximate) and the
default decoder at batch 1 and 32 (`--batches`) on the same queries, and counts how often the
int8 copies change the default's reply. `--latency-only` prints that table alone.

    python bench/chat_quality.py --run RUN [--split test] [--latency-queries 200]
    python bench/chat_quality.py --run RUN --split valid --grid     # choose the MMI settings
    python bench/chat_quality.py --run RUN --prompts bench/prompts/everyday.txt

`--grid` is for choosing the default decoder's settings on the *validation* split (never the
test split): it builds each candidate pool once and reranks it under every MMI weight and
length bonus, printing one row per setting.

`--prompts FILE` prints, instead, a Markdown table of greedy's and the default decoder's replies
to each line of FILE (everyday prompts written for this check, not taken from the corpus).

The last line reads `default decoder: generic A%  distinct-2 B  bleu C  (greedy: generic D%
distinct-2 E  bleu F)`.
"""

import argparse
import dataclasses
import itertools
import platform
import statistics
import sys
import time

import torch
from tqdm import tqdm

from torchtutor.chat import run_dir as rd
from torchtutor.chat.data.vocab import EOS
from torchtutor.chat.evaluate import relevance, reply_measures, split_pairs, teacher_forced_loss
from torchtutor.chat.fast.int8 import int8_chatbot
from torchtutor.chat.infer import rerank
from torchtutor.chat.infer.chatbot import Chatbot, prepare_input
from torchtutor.chat.infer.options import BEST_DECODING, DEFAULT_BATCH, DecodeOptions


def describe(options: DecodeOptions) -> str:
    samples = f" + {options.candidates} samples" if options.candidates else ""
    return (f"default (beam {options.beam_size}{samples}, mmi {options.mmi_weight:g}, "
            f"bonus {options.length_bonus:g})")


DEFAULT_NAME = describe(BEST_DECODING)
DECODERS = {
    "greedy": DecodeOptions(method="greedy"),
    "beam 5": DecodeOptions(method="beam", beam_size=5),
    "top-p 0.9": DecodeOptions(method="sample", top_p=0.9, seed=0),
    DEFAULT_NAME: BEST_DECODING,
}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def decode_all(bot, queries: list[str], options: DecodeOptions) -> list[list[str]]:
    words = []
    for start in tqdm(range(0, len(queries), DEFAULT_BATCH), desc="  decoding", unit="batch",
                      leave=False, file=sys.stderr):
        words += [r.words for r in bot.reply_batch(queries[start:start + DEFAULT_BATCH],
                                                    options)]
    return words


def median_ms(bot, queries: list[str], options: DecodeOptions, batch: int = 1) -> float:
    """Median milliseconds per reply over the batches of `batch` queries."""
    times = []
    for start in range(0, len(queries) - batch + 1, batch):
        started = time.perf_counter()
        bot.reply_batch(queries[start:start + batch], options, batch_size=batch)
        times.append((time.perf_counter() - started) * 1000.0 / batch)
    return statistics.median(times)


def latency_table(bot: Chatbot, queries: list[str], batches: list[int]) -> None:
    """Greedy, the default decoder on `--int8` copies (the default before it became exact:
    approximate) and the default decoder, on the same queries, at each batch size."""
    rows = {"greedy": (bot, DECODERS["greedy"]),
            "default, --int8 (approximate)": (int8_chatbot(bot), BEST_DECODING),
            "default (the trained model's)": (bot, BEST_DECODING)}
    print(f"{'ms per reply, median':<34}" + "".join(f"{f'batch {b}':>10}" for b in batches))
    replies = {}
    for name, (decoder, options) in rows.items():
        median_ms(decoder, queries[:3], options)   # warm-up
        print(f"{name:<34}" + "".join(f"{median_ms(decoder, queries, options, b):10.1f}"
                                      for b in batches), flush=True)
        replies[name] = [r.words for r in decoder.reply_batch(queries, options)]
    same = sum(a == b for a, b in zip(*list(replies.values())[1:], strict=True))
    print(f"--int8 gives the default's reply on {same} of {len(queries)} queries "
          f"({torch.get_num_threads()} threads, {cpu_name()}, torch {torch.__version__})")


def relevance_of(bot, queries: list[str], replies: list[list[str]]) -> float:
    reply_ids = [bot.vocab.encode(" ".join(w))[0] + [EOS] for w in replies]
    return relevance(bot.backward, bot.vocab, queries, reply_ids)


def row(name: str, measures: dict, rel: float, ms: float | None, reranked: bool) -> str:
    mark = "*" if reranked else " "
    latency = f"{ms:8.1f}" if ms is not None else "       -"
    return (f"{name:<32} {measures['bleu']:6.2f} {measures['distinct_1']:8.4f} "
            f"{measures['distinct_2']:8.4f} {measures['generic_rate']:8.1%} "
            f"{measures['unique_replies']:8.1%} {measures['stutter_rate']:8.1%} "
            f"{measures['avg_reply_length']:6.2f} "
            f"{rel:9.3f}{mark} {latency}")


HEADER = (f"{'decoder':<32} {'BLEU':>6} {'dist-1':>8} {'dist-2':>8} {'generic':>8} "
          f"{'unique':>8} {'stutter':>8} {'length':>6} {'relevance':>10} {'ms/reply':>8}")


# `--variants`: the default decoder beside its approximate --int8 copy and the stutter rules.
VARIANTS = {
    "default --int8 (approximate)": BEST_DECODING,
    "default + no-repeat-token": dataclasses.replace(BEST_DECODING, no_repeat_token=True),
    "default + no-repeat-token + no-repeat-ngram 2": dataclasses.replace(
        BEST_DECODING, no_repeat_token=True, no_repeat_ngram=2),
}


def table(bot, pairs, latency_queries: int, decoders: dict[str, DecodeOptions] = DECODERS,
          ) -> dict[str, dict]:
    queries = [q for q, _ in pairs]
    references = [r for _, r in pairs]
    print(HEADER)
    truth = reply_measures([r.split() for r in references], references)
    print(row("(the true replies)", truth, relevance_of(bot, queries,
                                                        [r.split() for r in references]),
              None, False), flush=True)
    results = {}
    for name, options in decoders.items():
        decoder = int8_chatbot(bot) if "--int8" in name else bot
        replies = decode_all(decoder, queries, options)
        measures = reply_measures(replies, references)
        ms = median_ms(decoder, queries[:latency_queries], options)
        print(row(name, measures, relevance_of(bot, queries, replies), ms,
                  options.rerank == "mmi"), flush=True)
        results[name] = measures
    return results


def grid(bot, pairs, weights: list[float], bonuses: list[float],
         only: list[str] | None = None) -> None:
    """Rerank one candidate pool per source under every (weight, bonus): valid split only."""
    queries = [q for q, _ in pairs]
    references = [r for _, r in pairs]
    def beam(size: int, samples: int) -> DecodeOptions:
        return dataclasses.replace(BEST_DECODING, beam_size=size, candidates=samples)

    sources = {"beam 16": beam(16, 0), "beam 8": beam(8, 0),
               "beam 16 + 8 samples": beam(16, 8), "beam 8 + 8 samples": beam(8, 8),
               "beam 8 + 16 samples": beam(8, 16), "beam 5 + 8 samples": beam(5, 8),
               "16 samples": dataclasses.replace(BEST_DECODING, method="sample",
                                                 candidates=16)}
    sources = {name: options for name, options in sources.items() if not only or name in only}
    ids = [prepare_input(bot.vocab, q, bot.max_length).ids for q in queries]
    print(HEADER.replace("decoder" + " " * 25, "source, weight, bonus".ljust(32)))
    for source, options in sources.items():
        generator = torch.Generator().manual_seed(0)
        pools = []
        for start in tqdm(range(0, len(ids), DEFAULT_BATCH), desc=f"  {source}", leave=False,
                          file=sys.stderr):
            chunk = ids[start:start + DEFAULT_BATCH]
            found = bot.candidates(chunk, options, generator)
            flat = [(row, h) for row, hyps in enumerate(found) for h in hyps]
            scores = rerank.sequence_log_probs(bot.backward, [rerank.with_eos(h[0])
                                                              for _, h in flat],
                                               [chunk[r] for r, _ in flat])
            per_row: list[list[tuple[list[int], float, float]]] = [[] for _ in chunk]
            for (r, (tokens, forward)), backward in zip(flat, scores, strict=True):
                per_row[r].append((tokens, forward, backward))
            pools += per_row
        for weight, bonus in itertools.product(weights, bonuses):
            replies = []
            for hyps in pools:
                best = max(hyps, key=lambda h: h[1] + weight * h[2]
                           + bonus * rerank.words_in(h[0]))
                replies.append(bot.vocab.decode(best[0]))
            measures = reply_measures(replies, references)
            print(row(f"{source}, {weight:g}, {bonus:g}", measures,
                      relevance_of(bot, queries, replies), None, True), flush=True)


def prompt_table(bot, prompts: list[str]) -> None:
    """Greedy's and the default decoder's replies side by side, as a Markdown table."""
    greedy = bot.reply_batch(prompts, DECODERS["greedy"])
    best = bot.reply_batch(prompts, DECODERS[DEFAULT_NAME])
    print(f"| prompt | greedy | {DEFAULT_NAME} |\n|---|---|---|")
    for prompt, g, b in zip(prompts, greedy, best, strict=True):
        print(f"| {prompt} | {g.text} | {b.text} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a chat run folder with RUN/backward")
    parser.add_argument("--split", choices=["valid", "test"], default="test",
                        help="held-out split to decode (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=0,
                        help="first N pairs only, 0: all (default: %(default)s)")
    parser.add_argument("--latency-queries", type=int, default=200,
                        help="queries timed one at a time (default: %(default)s)")
    parser.add_argument("--grid", action="store_true",
                        help="rerank under a grid of MMI settings instead (valid split only)")
    parser.add_argument("--weights", default="0.25,0.5,0.75,1,1.5,2",
                        help="MMI weights for --grid (default: %(default)s)")
    parser.add_argument("--bonuses", default="0,0.25,0.5,1",
                        help="length bonuses for --grid (default: %(default)s)")
    parser.add_argument("--sources", default="",
                        help="comma-separated candidate sources for --grid, empty: all "
                             "(default: all)")
    parser.add_argument("--prompts", default=None,
                        help="a file of prompts, one a line: print greedy's and the default's "
                             "replies to them instead (default: none)")
    parser.add_argument("--latency-only", action="store_true",
                        help="only the latency table: greedy, the default on --int8 copies and "
                             "the default, on the split's first --latency-queries queries at "
                             "each --batches size (default: off)")
    parser.add_argument("--variants", action="store_true",
                        help="instead of the decoders, the default beside its --int8 copy and "
                             "with the stutter rules (default: off)")
    parser.add_argument("--batches", default="1,32",
                        help="batch sizes of the latency table (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.grid and args.split == "test":
        parser.error("--grid chooses settings: run it on --split valid, never on the test split")
    if args.threads:
        torch.set_num_threads(args.threads)
    bot = Chatbot.load(args.run, "cpu")
    if bot.backward is None:
        parser.error(f"{args.run} has no backward model; train one with "
                     "`torchtutor chat train --direction backward --out RUN`")
    if args.prompts:
        with open(args.prompts, encoding="utf-8") as f:
            prompt_table(bot, [line.strip() for line in f if line.strip()])
        return 0
    pairs = split_pairs(args.run, rd.read_config(args.run), args.split)
    if args.limit:
        pairs = pairs[:args.limit]
    if args.latency_only:
        latency_table(bot, [q for q, _ in pairs[:args.latency_queries]],
                      [int(b) for b in args.batches.split(",")])
        return 0
    loss, _ = teacher_forced_loss(bot.model, bot.vocab, pairs)
    print(f"run {args.run}, {args.split} split: {len(pairs)} pairs; teacher-forced perplexity "
          f"{torch.tensor(loss).exp():.2f}; {cpu_name()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print("(* relevance is what MMI reranks by: partly optimised by that decoder)")
    if args.grid:
        grid(bot, pairs, [float(w) for w in args.weights.split(",")],
             [float(b) for b in args.bonuses.split(",")],
             [name for name in args.sources.split(",") if name])
        return 0
    if args.variants:
        table(bot, pairs, args.latency_queries, {DEFAULT_NAME: BEST_DECODING, **VARIANTS})
        return 0
    results = table(bot, pairs, args.latency_queries)
    print()
    latency_table(bot, [q for q, _ in pairs[:args.latency_queries]],
                  [int(b) for b in args.batches.split(",")])
    best, greedy = results[DEFAULT_NAME], results["greedy"]
    print(f"default decoder: generic {best['generic_rate']:.1%}  distinct-2 "
          f"{best['distinct_2']:.3f}  bleu {best['bleu']:.2f}  (greedy: generic "
          f"{greedy['generic_rate']:.1%}  distinct-2 {greedy['distinct_2']:.3f}  bleu "
          f"{greedy['bleu']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
