"""Turn user text into replies: greedy search, beam search and sampling, many inputs at once.

Every decoder works on a batch: the inputs are encoded together, and each sequence stops on
its own when it emits EOS (a finished row is fed PAD and ignored until the whole batch is done).
Inputs are normalized exactly as in training (`chat.text.normalize`); a reply never shows PAD,
SOS, EOS or UNK because those tokens are never chosen.

A reply's `score` is always the model's log-probability of the words it shows plus EOS, so
scores of different decoders compare directly. Beam search *ranks* hypotheses by that score
divided by length ** length_penalty (the hypotheses' token counts, EOS included). With
`rerank="mmi"` the hypotheses of the chosen decoder, plus `candidates` sampled replies, are
ranked by mutual information with the input instead (chat.rerank), using the run's backward
model. `min_length` and `repetition_penalty` steer the search without changing the scores.

A reply's `text` is what a person reads (chat.display: "I'm fine."); `words` keeps the
model's tokens ("i m fine .").
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from torchtutor.chat.data.text import normalize, tokenize
from torchtutor.chat.data.vocab import EOS, PAD, SOS, UNK
from torchtutor.chat.fast.int8 import DraftPolicy, quantize_int8
from torchtutor.chat.infer import rerank
from torchtutor.chat.infer.display import display_text
from torchtutor.chat.infer.options import (  # noqa: F401  (re-exported: the options live there)
    BEST_DECODING,
    DEFAULT_BATCH,
    MAX_BEAM,
    MAX_CANDIDATES,
    MAX_NO_REPEAT,
    MAX_SEED,
    MAX_TEMPERATURE,
    METHODS,
    PLAIN_DECODING,
    RERANKERS,
    DecodeOptions,
    default_options,
    resolve_options,
)
from torchtutor.runtime.device import device_of, resolve_device
from torchtutor.runtime.errors import UserError

# Checked int8 greedy search (the CPU default). At batch 1 a step is bound by reading the
# weights, and int8 weights are a quarter of fp32's bytes; but rounded weights can flip a
# near-tie between the two likeliest words. So greedy runs on the int8 copy first, and any
# reply whose smallest top-1/top-2 log-prob gap stayed below CHECK_MARGIN is checked with
# the fp32 weights (`checked_greedy`). Calibrated on a briefly trained tutorial-size run:
# with one scale per matrix, the 77 of 3,000 Cornell validation replies that differed from
# fp32's all had a gap of at most 0.031 nats; with per-row scales for the Linear layers
# (now), the 175 of 8,364 validation and test replies that differed had at most 0.035. 0.05
# leaves room and sends about a fifth of replies to the fp32 check (22% there;
# bench/RESULTS.md).
CHECK_MARGIN = 0.05


def attach_int8_draft(bot: Any, fp32_scores: bool = False) -> Any:
    """Give a CPU bot an int8 copy of its model for checked greedy search (see CHECK_MARGIN),
    with the DraftPolicy that turns it off where it would be slower than fp32 greedy.

    `fp32_scores`: every reply's score must be fp32's (a caller that shows scores); the
    draft's scores are int8's on replies it did not check, so greedy then runs in fp32.
    """
    if device_of(bot.model).type == "cpu":
        bot.draft = quantize_int8(bot.model).eval()
        bot.draft.policy = DraftPolicy(fp32_scores=fp32_scores)
        if getattr(bot, "backward", None) is not None:
            bot.backward_draft = quantize_int8(bot.backward).eval()
    return bot


def load_bot(run: str, device: str = "auto", int8: bool = False, exact: bool = False,
             fp32_scores: bool = False) -> Any:
    """A run's TrainedChatbot on `device`; with `int8`, on the CPU with int8 weights only.

    On the CPU, unless `exact`, it also carries an int8 draft for checked greedy search
    (`fp32_scores`: see attach_int8_draft).
    """
    from torchtutor.chat.run_dir import load_trained

    if int8 and (device or "auto") not in ("auto", "cpu"):
        raise UserError("--int8 runs on the CPU only; leave out --device or use --device cpu")
    bot = load_trained(run, resolve_device("cpu" if int8 else device))
    if int8:
        bot.model = quantize_int8(bot.model).eval()
    elif not exact:
        attach_int8_draft(bot, fp32_scores)
    return bot


@dataclass
class Reply:
    text: str
    score: float
    unknown_words: list[str]
    truncated: bool
    empty: bool
    alternatives: list[tuple[str, float]]   # the next best (text, score), ranks 2..n_best
    words: list[str] = field(default_factory=list)   # the reply's tokens, as in the vocabulary


@dataclass
class PreparedInput:
    """One user text as the encoder sees it."""
    words: list[str]          # tokens after normalization and truncation (unknowns included)
    ids: list[int]            # ids fed to the encoder, EOS appended; [] when empty
    unknown_words: list[str]
    truncated: bool

    @property
    def empty(self) -> bool:
        return not self.ids


def prepare_input(vocab: Any, text: str, max_length: int) -> PreparedInput:
    """Normalize like training, look words up, and keep at most `max_length - 1` of them.

    Training keeps pairs with fewer than `max_length` words per side, so the encoder never saw
    more than `max_length - 1` words plus EOS; longer inputs are cut there (with `truncated`).
    Unknown words become UNK, or are skipped when the vocabulary has no UNK.
    """
    if not isinstance(text, str):
        text = str(text)
    # Lone surrogates (from odd terminal bytes) would break str methods downstream.
    text = text.encode("utf-8", "replace").decode("utf-8")
    words = tokenize(normalize(text))
    ids, unknown = vocab.encode(" ".join(words))
    if not vocab.has_unk:
        words = [w for w in words if w in vocab]
    keep = max(max_length - 1, 1)
    truncated = len(ids) > keep
    if truncated:
        ids, words = ids[:keep], words[:keep]
    return PreparedInput(words=words, ids=ids + [EOS] if ids else [], unknown_words=unknown,
                         truncated=truncated)


def reply_batch(bot: Any, texts: list[str], options: DecodeOptions | None = None,
                batch_size: int = DEFAULT_BATCH,
                on_chunk: Callable[[int], None] | None = None) -> list[Reply]:
    """Replies to `texts`, in order. `bot` is a TrainedChatbot (model, vocab, max_length).

    `on_chunk(n)` is told after each decoded chunk of `n` texts (a progress bar's update)."""
    options = options or DecodeOptions()
    options.check()
    generator = None
    if options.method == "sample" or (options.rerank == "mmi" and options.candidates):
        generator = torch.Generator(device=device_of(bot.model))
        if options.seed is not None:
            generator.manual_seed(options.seed)
        else:
            generator.seed()
    prepared = [prepare_input(bot.vocab, text, bot.max_length) for text in texts]
    replies: list[Reply | None] = [None] * len(texts)
    live = [i for i, p in enumerate(prepared) if not p.empty]
    for i, p in enumerate(prepared):
        if p.empty:
            replies[i] = Reply(text="", score=0.0, unknown_words=p.unknown_words,
                               truncated=p.truncated, empty=True, alternatives=[])
    for start in range(0, len(live), batch_size):
        chunk = live[start:start + batch_size]
        hypotheses = _decode_chunk(bot, [prepared[i].ids for i in chunk], options, generator)
        for i, ranked in zip(chunk, hypotheses, strict=True):
            words, score = ranked[0]
            alternatives = [(display_text(w), s) for w, s in ranked[1:options.n_best]]
            replies[i] = Reply(text=display_text(words), score=score,
                               unknown_words=prepared[i].unknown_words,
                               truncated=prepared[i].truncated, empty=False,
                               alternatives=alternatives, words=words)
        if on_chunk is not None:
            on_chunk(len(chunk))
    return replies  # type: ignore[return-value]


def notices(reply: Reply, has_unk: bool = True) -> list[str]:
    """Short remarks a user interface shows beside a reply."""
    out = []
    if reply.unknown_words:
        unique = list(dict.fromkeys(reply.unknown_words))
        what = "treated as unknown" if has_unk else "skipped"
        out.append(f"words I do not know ({what}): {', '.join(unique[:10])}"
                   + (" ..." if len(unique) > 10 else ""))
    if reply.truncated:
        out.append("your message was long; I read only its beginning")
    if reply.empty:
        out.append("I need some words I know to reply to; try a short sentence")
    return out


# --- batched search ----------------------------------------------------------------------------


def encode_ids(model: Any, id_lists: list[list[int]]) -> tuple[Tensor, Tensor, Tensor]:
    """Zero-padded time-major inputs for `id_lists` through the encoder."""
    device = device_of(model)
    width = max(len(ids) for ids in id_lists)
    padded = [ids + [PAD] * (width - len(ids)) for ids in id_lists]
    inputs = torch.tensor(padded, dtype=torch.long).t()
    lengths = torch.tensor([len(ids) for ids in id_lists], dtype=torch.long)
    return model.encode(inputs.to(device), lengths)


def _never_emit(like: Tensor, has_unk: bool) -> Tensor:
    """A (V,) row to add to log-probs: -inf on tokens a reply must never show (PAD, SOS and
    UNK), 0 elsewhere. Adding it makes a new tensor in one op (the model's output stays)."""
    row = torch.zeros(like.size(-1), dtype=like.dtype, device=like.device)
    row[[PAD, SOS, UNK] if has_unk else [PAD, SOS]] = float("-inf")
    return row


def _block_repeats(log_probs: Tensor, histories: list[list[int]], n: int) -> Tensor:
    """Forbid, per row, any token that would repeat an n-gram already in that row's history."""
    if n <= 0:
        return log_probs
    for row, history in enumerate(histories):
        if len(history) < n - 1:
            continue
        prefix = history[len(history) - (n - 1):] if n > 1 else []
        banned = [history[i + n - 1] for i in range(len(history) - n + 1)
                  if history[i:i + n - 1] == prefix]
        if banned:
            log_probs[row, banned] = float("-inf")
    return log_probs


def _filter_for_sampling(log_probs: Tensor, options: DecodeOptions) -> Tensor:
    """Temperature, then top-k, then top-p (nucleus) on (B, V) log-probs -> logits to sample."""
    # Shift the best to 0 first: a tiny temperature then sends the others to -inf, not all
    # of them (the best included) to -inf, which would leave nothing to sample.
    logits = (log_probs - log_probs.amax(dim=-1, keepdim=True)) / options.temperature
    if options.top_k > 0 and options.top_k < logits.size(-1):
        # Exactly k tokens, even when probabilities tie at the k-th place.
        top = logits.topk(options.top_k, dim=-1)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, top.indices, top.values)
    if options.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the mass before it already reaches top_p; the top token stays.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= options.top_p
        drop_sorted[..., 0] = False   # a top_p below float32's resolution still keeps one
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


# Sampling draws from at most this many likeliest words when that is exact: with top-k up to
# it, or with top-p when these words already hold top_p of the mass (for the default-recipe
# Cornell run, top-p 0.9: 84% of sampling steps of a batch of 8; 256 words: 19%). Sorting the
# whole vocabulary, and drawing from all of it, took 5 of a sampled step's 7 ms at batch 8.
SHORTLIST = 1024


def _sample_tokens(log_probs: Tensor, options: DecodeOptions,
                   generator: torch.Generator | None) -> Tensor:
    """One token per row of (B, V) log-probs, drawn under temperature, top-k and top-p."""
    vocab = log_probs.size(-1)
    logits = (log_probs - log_probs.amax(dim=-1, keepdim=True)) / options.temperature
    wide = None    # rows whose nucleus reaches beyond the shortlist
    if 0 < options.top_k <= SHORTLIST and options.top_k < vocab:
        top = logits.topk(options.top_k, dim=-1)
        probs = top.values.softmax(dim=-1)               # the top-k words' own distribution
    elif options.top_k == 0 and options.top_p < 1.0 and SHORTLIST < vocab:
        top = logits.topk(SHORTLIST, dim=-1)
        probs = logits.softmax(dim=-1).gather(-1, top.indices)
        wide = probs.sum(dim=-1) < options.top_p
    else:
        full = _filter_for_sampling(log_probs, options).softmax(dim=-1)
        return torch.multinomial(full, 1, generator=generator).squeeze(1)
    if options.top_p < 1.0:   # the same rule as _filter_for_sampling, on sorted words
        drop = (probs.cumsum(dim=-1) - probs) >= options.top_p
        drop[..., 0] = False
        probs = probs.masked_fill(drop, 0.0)
    chosen = top.indices.gather(-1, torch.multinomial(probs, 1, generator=generator)).squeeze(1)
    if wide is not None and bool(wide.any()):
        full = _filter_for_sampling(log_probs[wide], options).softmax(dim=-1)
        chosen[wide] = torch.multinomial(full, 1, generator=generator).squeeze(1)
    return chosen


def _decode_chunk(bot: Any, id_lists: list[list[int]], options: DecodeOptions,
                  generator: torch.Generator | None) -> list[list[tuple[list[str], float]]]:
    """Ranked (words, score) hypotheses for each input of one chunk."""
    with torch.inference_mode():
        if options.rerank == "mmi":
            found = _mmi(bot, id_lists, options, generator)
        else:
            found = _search(bot, id_lists, options, generator)
    return [[(bot.vocab.decode(ids), score) for ids, score in ranked] for ranked in found]


def mmi_models(bot: Any) -> tuple[Any, Any]:
    """The bot whose model searches MMI's candidates, and the backward model that scores
    them: the int8 copies when the bot has them (attach_int8_draft), else its own models."""
    draft, backward_draft = getattr(bot, "draft", None), getattr(bot, "backward_draft", None)
    if draft is None or backward_draft is None:
        return bot, bot.backward
    searcher = copy.copy(bot)
    searcher.model, searcher.draft = draft, None
    return searcher, backward_draft


def _mmi(bot: Any, id_lists: list[list[int]], options: DecodeOptions,
         generator: torch.Generator | None) -> list[list[tuple[list[int], float]]]:
    """MMI reranking (chat.rerank). On the CPU (unless --exact) the candidates are searched,
    and the backward model scores them, with the int8 copies: that is where nearly all of a
    reply's time goes, and the ranking only needs the scores' order, which int8's rounding
    rarely changes (bench/RESULTS.md). The replies a caller shows are then scored again with
    the fp32 forward model, so every score shown is still fp32's log p(reply | input)."""
    searcher, backward = mmi_models(bot)
    ranked = rerank.mmi_rerank(backward, id_lists,
                               candidates(searcher, id_lists, options, generator),
                               options.mmi_weight, options.length_bonus)
    if searcher is bot:
        return ranked
    shown = [row[:max(options.n_best, 1)] for row in ranked]
    flat = [(i, tokens) for i, row in enumerate(shown) for tokens, _ in row if tokens]
    scores = rerank.sequence_log_probs(bot.model, [id_lists[i] for i, _ in flat],
                                       [tokens for _, tokens in flat]) if flat else []
    fp32 = {(i, tuple(tokens)): score for (i, tokens), score in zip(flat, scores, strict=True)}
    return [[(tokens, fp32.get((i, tuple(tokens)), score)) for tokens, score in row]
            for i, row in enumerate(shown)]


def candidates(bot: Any, id_lists: list[list[int]], options: DecodeOptions,
               generator: torch.Generator | None) -> list[list[tuple[list[int], float]]]:
    """What `--rerank mmi` chooses from, per input: the decoder's hypotheses (none for
    `sample`) and `options.candidates` sampled replies, repeats and empty replies removed."""
    searched = [] if options.method == "sample" else [_search(bot, id_lists, options, generator)]
    sampled = [_sample(bot, id_lists, options, generator)] if options.candidates else []
    return rerank.pool(*searched, *sampled, min_length=options.min_length)


def _steered(min_length: int, repetition_penalty: float) -> bool:
    return min_length > 0 or repetition_penalty != 1.0


def _search(bot: Any, id_lists: list[list[int]], options: DecodeOptions,
            generator: torch.Generator | None) -> list[list[tuple[list[int], float]]]:
    """The chosen decoder's ranked (token ids, log-prob) hypotheses for each input."""
    if options.method == "beam" and options.beam_size > 1:
        return beam_search(bot.model, id_lists, bot.max_length, options.beam_size,
                           options.length_penalty, options.no_repeat_ngram, bot.vocab.has_unk,
                           min_length=options.min_length,
                           repetition_penalty=options.repetition_penalty)
    if (options.method == "greedy" and getattr(bot, "draft", None) is not None
            and not _steered(options.min_length, options.repetition_penalty)):
        tokens, scores = checked_greedy(bot.model, bot.draft, id_lists, bot.max_length,
                                        options.no_repeat_ngram, bot.vocab.has_unk)
    else:
        tokens, scores, _ = greedy_search(bot.model, id_lists, bot.max_length,
                                          options.no_repeat_ngram, bot.vocab.has_unk,
                                          options if options.method == "sample" else None,
                                          generator, min_length=options.min_length,
                                          repetition_penalty=options.repetition_penalty)
    return [[(t, s)] for t, s in zip(tokens, scores, strict=True)]


def _sample(bot: Any, id_lists: list[list[int]], options: DecodeOptions,
            generator: torch.Generator | None) -> list[list[tuple[list[int], float]]]:
    """`options.candidates` sampled replies per input, all rows decoded as one batch."""
    n = options.candidates
    repeated = [ids for ids in id_lists for _ in range(n)]
    tokens, scores, _ = greedy_search(bot.model, repeated, bot.max_length,
                                      options.no_repeat_ngram, bot.vocab.has_unk, options,
                                      generator, min_length=options.min_length,
                                      repetition_penalty=options.repetition_penalty)
    found = list(zip(tokens, scores, strict=True))
    return [found[i * n:(i + 1) * n] for i in range(len(id_lists))]


def _steer(log_probs: Tensor, step: int, min_length: int, penalty: float,
           seen: Tensor | None) -> Tensor:
    """The log-probs a search chooses from (its scores stay the model's): no EOS before
    `min_length` words; words already said (`seen`, (B, V) bool) `penalty` times less likely."""
    if step < min_length and log_probs.size(-1) > UNK + 1:  # some word to say instead
        log_probs = log_probs.clone()
        log_probs[:, EOS] = float("-inf")
    if seen is not None:
        log_probs = log_probs - math.log(penalty) * seen
    return log_probs


def greedy_search(model: Any, id_lists: list[list[int]], max_length: int,
                  no_repeat_ngram: int = 0, has_unk: bool = True,
                  sampling: DecodeOptions | None = None,
                  generator: torch.Generator | None = None, keep_attention: bool = False,
                  margins: list[float] | None = None, min_length: int = 0,
                  repetition_penalty: float = 1.0,
                  ) -> tuple[list[list[int]], list[float], list[Tensor] | None]:
    """Greedy (or, with `sampling`, sampled) replies for a batch of encoded inputs.

    Returns each row's tokens up to and including EOS (none if it never came within
    `max_length` steps), its log-probability, and with `keep_attention` each row's attention
    weights (reply steps, input positions). A `margins` list is filled with each row's
    smallest gap between the best and second-best log-prob over its reply's steps.
    `min_length` and `repetition_penalty` change what is chosen, never the scores (`_steer`).
    """
    encoder_outputs, encoder_mask, hidden = encode_ids(model, id_lists)
    batch = len(id_lists)
    device = encoder_outputs.device
    tokens = torch.full((batch,), SOS, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    banned: Tensor | None = None
    steps: list[Tensor] = []
    step_log_probs: list[Tensor] = []
    attention: list[Tensor] = []
    histories: list[list[int]] = [[] for _ in range(batch)]
    steered = _steered(min_length, repetition_penalty)
    seen: Tensor | None = None
    rows = torch.arange(batch, device=device)
    # Few ops per step on purpose: at batch 1 each op's fixed cost is a visible share, so the
    # chosen tokens' log-probs and the top-2 gaps are read once from all steps at the end.
    # A finished row keeps decoding (its tokens after EOS are cut off at the end).
    for step in range(max_length):
        log_probs, hidden, weights = model.decode_step(tokens, hidden, encoder_outputs,
                                                       encoder_mask)
        if banned is None:
            banned = _never_emit(log_probs, has_unk)
            if repetition_penalty != 1.0:
                seen = torch.zeros(log_probs.shape, dtype=torch.bool, device=device)
        log_probs = log_probs + banned
        if no_repeat_ngram:
            log_probs = _block_repeats(log_probs, histories, no_repeat_ngram)
        choose_from = (_steer(log_probs, step, min_length, repetition_penalty, seen)
                       if steered else log_probs)
        if sampling is None:
            # max's indices, like argmax, are the first maximum; it is twice as fast here.
            chosen = choose_from.max(dim=-1).indices
        else:
            chosen = _sample_tokens(choose_from, sampling, generator)
        if seen is not None:
            seen[rows, chosen] = True
        step_log_probs.append(log_probs)
        steps.append(chosen)
        if keep_attention:
            attention.append(weights)
        finished |= chosen == EOS
        if no_repeat_ngram:
            for row, token in enumerate(chosen.tolist()):
                histories[row].append(token)
        if bool(finished.all()):
            break
        tokens = chosen
    chosen_table = torch.stack(steps, dim=1)                      # (B, steps)
    out_tokens = [_until_eos(row) for row in chosen_table.tolist()]
    all_log_probs = torch.stack(step_log_probs, dim=1)            # (B, steps, V)
    step_scores = all_log_probs.gather(2, chosen_table.unsqueeze(2)).squeeze(2)
    scores = [sum(row[:len(tokens)]) for row, tokens
              in zip(step_scores.double().tolist(), out_tokens, strict=True)]
    if margins is not None:
        # The chosen (greedy: the best) token against the best other one; cheaper than topk.
        others = all_log_probs.scatter(2, chosen_table.unsqueeze(2), float("-inf"))
        table_gaps = (step_scores - others.amax(dim=-1)).tolist()
        margins[:] = [min(row[:len(tokens)] or [math.inf])
                      for row, tokens in zip(table_gaps, out_tokens, strict=True)]
    kept = None
    if keep_attention:
        stacked = torch.stack(attention, dim=1).float().cpu()   # (B, steps, T)
        kept = [stacked[row, :len(out_tokens[row]), :len(id_lists[row])]
                for row in range(batch)]
    return out_tokens, scores, kept


def checked_greedy(model: Any, draft: Any, id_lists: list[list[int]], max_length: int,
                   no_repeat_ngram: int = 0, has_unk: bool = True,
                   margin: float = CHECK_MARGIN) -> tuple[list[list[int]], list[float]]:
    """Greedy replies from the `draft` (int8) model, checked with `model` (fp32) for every row
    whose smallest gap between its two likeliest words fell below `margin`.

    A checked row keeps the draft's reply when fp32, fed that reply in one teacher-forced pass,
    picks the same word at every step (then it is fp32's greedy reply, with fp32's score); the
    few that fail are decoded again in fp32. A row above the margin keeps the draft's score
    (within a few hundredths of fp32's). When the draft's `policy` (int8.DraftPolicy) says the
    check would cost more than it saves, or fp32 scores are wanted on every row, this is
    plain fp32 greedy search.
    """
    policy = getattr(draft, "policy", None)
    if policy is not None and not policy.use_draft():
        gaps = [] if policy.wants_gaps() else None
        tokens, scores, _ = greedy_search(model, id_lists, max_length, no_repeat_ngram, has_unk,
                                          margins=gaps)
        if gaps is not None:   # what the draft would have checked (redone rows are rare)
            policy.record(len(id_lists), sum(gap < margin for gap in gaps), 0)
        return tokens, scores
    gaps: list[float] = []
    tokens, scores, _ = greedy_search(draft, id_lists, max_length, no_repeat_ngram, has_unk,
                                      margins=gaps)
    unsure = [row for row, gap in enumerate(gaps) if gap < margin]
    checked = len(unsure) if not no_repeat_ngram else 0
    if unsure and not no_repeat_ngram:  # blocking depends on the history: decode again
        verified = verify_greedy(model, [id_lists[row] for row in unsure],
                                 [tokens[row] for row in unsure], has_unk)
        for row, score in zip(unsure, verified, strict=True):
            if score is not None:
                scores[row] = score
        unsure = [row for row, score in zip(unsure, verified, strict=True) if score is None]
    if unsure:
        exact, exact_scores, _ = greedy_search(model, [id_lists[row] for row in unsure],
                                               max_length, no_repeat_ngram, has_unk)
        for row, row_tokens, score in zip(unsure, exact, exact_scores, strict=True):
            tokens[row], scores[row] = row_tokens, score
    if policy is not None:
        policy.record(len(id_lists), checked, len(unsure))
    return tokens, scores


def verify_greedy(model: Any, id_lists: list[list[int]], replies: list[list[int]],
                  has_unk: bool = True) -> list[float | None]:
    """For each reply, its log-probability if it is `model`'s greedy reply, else None.

    One teacher-forced pass (the decoder GRU over the whole reply in one call, one output
    projection for all steps) instead of a step-by-step search: about two thirds of the time
    of decoding again, most of it the encoder (bench/RESULTS.md).
    """
    encoder_outputs, encoder_mask, hidden = encode_ids(model, id_lists)
    steps = max(len(reply) for reply in replies)
    padded = [reply + [PAD] * (steps - len(reply)) for reply in replies]
    targets = torch.tensor(padded, dtype=torch.long).t().to(encoder_outputs.device)
    log_probs = model.decode_teacher_forced(targets, hidden, encoder_outputs, encoder_mask)
    log_probs = log_probs + _never_emit(log_probs, has_unk)
    best = log_probs.max(dim=-1).indices.t().tolist()                     # (B, steps)
    picked = log_probs.gather(2, targets.unsqueeze(2)).squeeze(2).t().double().tolist()
    return [sum(picked[row][:len(reply)]) if best[row][:len(reply)] == reply else None
            for row, reply in enumerate(replies)]


def _until_eos(row: list[int]) -> list[int]:
    return row[:row.index(EOS) + 1] if EOS in row else row


def beam_search(model: Any, id_lists: list[list[int]], max_length: int, beam_size: int,
                length_penalty: float = 1.0, no_repeat_ngram: int = 0, has_unk: bool = True,
                min_length: int = 0, repetition_penalty: float = 1.0,
                ) -> list[list[tuple[list[int], float]]]:
    """Beam search for a batch of encoded inputs; all B * K hypotheses advance together.

    Each input keeps `beam_size` live hypotheses. A hypothesis that emits EOS is set aside as
    finished; an input is done once it has `beam_size` finished ones (or at `max_length` steps,
    when its live ones count as finished). Returns, per input, finished hypotheses (token ids
    with EOS, log-prob) best first by log-prob / length ** length_penalty. With `min_length`
    or `repetition_penalty` the search (and that ranking) uses the steered log-probs
    (`_steer`), while the returned scores stay the model's.
    """
    encoder_outputs, encoder_mask, hidden = encode_ids(model, id_lists)
    batch, k = len(id_lists), beam_size
    device = encoder_outputs.device
    steered = _steered(min_length, repetition_penalty)
    # Every hypothesis of input b sits in rows b*k .. b*k+k-1.
    expand = torch.arange(batch, device=device).repeat_interleave(k)
    encoder_outputs = encoder_outputs.index_select(1, expand)
    encoder_mask = encoder_mask.index_select(1, expand)
    hidden = hidden.index_select(1, expand)
    tokens = torch.full((batch * k,), SOS, dtype=torch.long, device=device)
    # Only the first hypothesis is live at the start, so the first step does not pick k copies.
    beam_scores = torch.full((batch, k), float("-inf"), device=device)
    beam_scores[:, 0] = 0.0
    model_scores = beam_scores.clone()   # the model's log-probs, when steering changes scores
    seen: Tensor | None = None
    histories: list[list[int]] = [[] for _ in range(batch * k)]
    # (tokens, model log-prob, search score) of finished hypotheses
    finished: list[list[tuple[list[int], float, float]]] = [[] for _ in range(batch)]
    done = [False] * batch

    def rank(item: tuple[list[int], float, float]) -> float:
        return item[2] / (max(len(item[0]), 1) ** length_penalty)

    for step in range(max_length):
        log_probs, hidden, _ = model.decode_step(tokens, hidden, encoder_outputs, encoder_mask)
        log_probs = log_probs.float() + _never_emit(log_probs, has_unk).float()
        log_probs = _block_repeats(log_probs, histories, no_repeat_ngram)
        vocab = log_probs.size(-1)
        if repetition_penalty != 1.0 and seen is None:
            seen = torch.zeros(log_probs.shape, dtype=torch.bool, device=device)
        choose_from = (_steer(log_probs, step, min_length, repetition_penalty, seen)
                       if steered else log_probs)
        totals = (beam_scores.unsqueeze(2) + choose_from.view(batch, k, vocab)).view(batch, -1)
        # 2k candidates: even if k of them end in EOS, k live ones remain.
        top_scores, top_index = totals.topk(min(2 * k, totals.size(1)), dim=1)
        if steered:
            model_totals = (model_scores.unsqueeze(2) + log_probs.view(batch, k, vocab))
            top_model = model_totals.view(batch, -1).gather(1, top_index).tolist()
        top_scores, top_index = top_scores.tolist(), top_index.tolist()
        if not steered:
            top_model = top_scores
        last = step == max_length - 1
        next_rows, next_tokens, next_scores, next_model = [], [], [], []
        for b in range(batch):
            chosen: list[tuple[int, int, float, float]] = []
            for score, model_score, index in zip(top_scores[b], top_model[b], top_index[b],
                                                 strict=True):
                if score == float("-inf") or len(chosen) == k:
                    break
                origin, token = b * k + index // vocab, index % vocab
                if token == EOS:
                    if not done[b]:
                        finished[b].append((histories[origin] + [EOS], model_score, score))
                    continue
                chosen.append((origin, token, score, model_score))
            if not done[b] and (len(finished[b]) >= k or last):
                if last:  # out of steps: live hypotheses count as finished, without EOS
                    finished[b].extend((histories[o] + [t], m, s) for o, t, s, m in chosen)
                done[b] = True
            while len(chosen) < k:   # keep the shape; dead rows carry -inf
                chosen.append((b * k, PAD, float("-inf"), float("-inf")))
            for origin, token, score, model_score in chosen:
                next_rows.append(origin)
                next_tokens.append(token)
                next_scores.append(score)
                next_model.append(model_score)
        if all(done):
            break
        rows = torch.tensor(next_rows, device=device)
        hidden = hidden.index_select(1, rows)
        tokens = torch.tensor(next_tokens, device=device)
        beam_scores = torch.tensor(next_scores, device=device).view(batch, k)
        model_scores = torch.tensor(next_model, device=device).view(batch, k)
        if seen is not None:
            seen = seen.index_select(0, rows)
            seen[torch.arange(batch * k, device=device), tokens] = True
        histories = [histories[r] + [t] for r, t in zip(next_rows, next_tokens, strict=True)]
    # A vocabulary of specials alone leaves nothing to pick: reply with nothing, not a crash.
    return [[(t, m) for t, m, _ in sorted(found, key=rank, reverse=True)] or [([], float("-inf"))]
            for found in finished]
