"""The reference decoders: greedy search, sampling and beam search, over one decoder loop.

Every decoder works the same way: encode the inputs once, then feed the decoder one token per
row per step, and let a `Search` choose each row's next token from the log-probabilities. A
search owns some rows per input (greedy 1, sampling n, beam k) and says, after each step,
which of its rows to continue from (beam search keeps its best k) and with which tokens. Rows
stop mattering once they emit EOS; the loop stops when every search is done or after
`max_length` steps.

`run(model, inputs, max_length, *searches)` can drive several searches at once: the default
decoder's beam hypotheses and its samples then share each decoder step (one read of the
weights for all of them), and it chooses what each search alone would choose (the same reply
on all 4,226 Cornell test queries, bench/decode_parity.py; the float products differ in the
last bits with the number of rows, so scores agree to about 1e-6).

A hypothesis is (token ids, log p(reply | input)): the ids end with EOS unless the reply ran
out of steps, and the score is always the model's own log-probability of those ids, whatever
steered the choice (`Rules`), so the scores of all decoders compare directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from torchtutor.chat.data.vocab import EOS, PAD, SOS, UNK
from torchtutor.chat.infer.options import DecodeOptions
from torchtutor.chat.model import Seq2Seq
from torchtutor.runtime.device import device_of

Hypothesis = tuple[list[int], float]


def encode(model: Seq2Seq, inputs: list[list[int]]) -> tuple[Tensor, Tensor, Tensor]:
    """Zero-padded, time-major `inputs` (id lists with EOS) through the encoder."""
    width = max(len(ids) for ids in inputs)
    padded = torch.tensor([ids + [PAD] * (width - len(ids)) for ids in inputs]).t()
    lengths = torch.tensor([len(ids) for ids in inputs])
    return model.encode(padded.to(device_of(model)), lengths)


@torch.inference_mode()
def run(model: Seq2Seq, inputs: list[list[int]], max_length: int, *searches: Search) -> None:
    """Decode `inputs` with every search, all their rows through one decoder step at a time;
    a search that is done leaves the batch."""
    outputs, mask, hidden = encode(model, inputs)
    row_input = torch.cat([s.start(inputs, outputs.device) for s in searches])
    outputs, mask, hidden = outputs[:, row_input], mask[:, row_input], hidden[:, row_input]
    tokens = torch.full(row_input.shape, SOS, device=outputs.device)
    active = list(searches)
    for step in range(max_length):
        log_probs, hidden, _ = model.decode_step(tokens, hidden, outputs, mask)
        keep, chosen, offset = [], [], 0
        for search, part in zip(active, log_probs.split([s.rows for s in active]), strict=True):
            parents, next_tokens = search.advance(part, step, step == max_length - 1)
            if not search.done:   # beam search reorders its rows; the others keep theirs
                rows = torch.arange(search.rows) if parents is None else parents.cpu()
                keep.append(rows + offset)
                chosen.append(next_tokens)
            offset += search.rows
        active = [search for search in active if not search.done]
        if not active:
            break
        tokens, keep = torch.cat(chosen), torch.cat(keep).to(tokens.device)
        if len(keep) < offset:   # a search left: its rows go
            outputs, mask = outputs.index_select(1, keep), mask.index_select(1, keep)
        if len(keep) < offset or any(search.reorders for search in active):
            hidden = hidden.index_select(1, keep)


@dataclass(frozen=True)
class Rules:
    """What a search may choose. A reply never shows PAD, SOS or (with `has_unk`) UNK; the
    other rules steer the choice without changing any score: `no_repeat_ngram` N forbids a
    word that would repeat an N-gram of the reply, `no_repeat_token` the word just said,
    `no_copy_ngram` N a word that would copy an N-gram of the input, `min_length` forbids EOS
    before that many words, and a word already said is `repetition_penalty` times less likely
    to be chosen."""
    has_unk: bool = True
    no_repeat_ngram: int = 0
    min_length: int = 0
    repetition_penalty: float = 1.0
    no_repeat_token: bool = False
    no_copy_ngram: int = 0

    def never_emit(self, vocab_size: int, device: torch.device) -> Tensor:
        """A (V,) row to add to log-probs: -inf on the tokens a reply never shows."""
        row = torch.zeros(vocab_size, device=device)
        row[[PAD, SOS, UNK] if self.has_unk else [PAD, SOS]] = -math.inf
        return row

    def steer(self, log_probs: Tensor, history: Tensor, step: int,
              sources: list[list[int]]) -> Tensor:
        """The log-probs to choose from, given each row's tokens so far (R, step) and each
        row's input ids."""
        if self.no_repeat_ngram or self.no_copy_ngram:
            histories = history.tolist()
        if self.no_repeat_ngram:
            log_probs = _ban_completions(log_probs, histories, histories, self.no_repeat_ngram)
        if self.no_copy_ngram:
            inputs = [[token for token in ids if token != EOS] for ids in sources]
            log_probs = _ban_completions(log_probs, histories, inputs, self.no_copy_ngram)
        if self.no_repeat_token and step:
            log_probs = log_probs.scatter(1, history[:, -1:], -math.inf)
        if step < self.min_length and log_probs.size(-1) > UNK + 1:  # a word to say instead
            log_probs = log_probs.clone()
            log_probs[:, EOS] = -math.inf
        if self.repetition_penalty != 1.0 and step:
            seen = torch.zeros_like(log_probs, dtype=torch.bool).scatter_(1, history, True)
            log_probs = log_probs - math.log(self.repetition_penalty) * seen
        return log_probs


def _ban_completions(log_probs: Tensor, histories: list[list[int]],
                     texts: list[list[int]], n: int) -> Tensor:
    """-inf, per row, on every token that would make the row's last n tokens an n-gram of
    that row's text (its own history: no repeats; its input: no copies), in place (the
    searches pass a tensor of their own)."""
    for row, (history, text) in enumerate(zip(histories, texts, strict=True)):
        if len(history) < n - 1:
            continue
        prefix = history[len(history) - (n - 1):] if n > 1 else []
        banned = [text[i + n - 1] for i in range(len(text) - n + 1)
                  if text[i:i + n - 1] == prefix]
        if banned:
            log_probs[row, banned] = -math.inf
    return log_probs


class Search:
    """One decoder's choices for `per_input` rows of every input (see the module docstring)."""

    reorders = False   # whether `advance` may continue from other rows than its own

    def __init__(self, per_input: int, rules: Rules):
        self.per_input, self.rules = per_input, rules
        self.rows = 0
        self.done = False

    def start(self, inputs: list[list[int]], device: torch.device) -> Tensor:
        """Which input each of this search's rows decodes."""
        self.rows = len(inputs) * self.per_input
        self.sources = [ids for ids in inputs for _ in range(self.per_input)]
        self.history = torch.zeros(self.rows, 0, dtype=torch.long, device=device)
        return torch.arange(len(inputs), device=device).repeat_interleave(self.per_input)

    def advance(self, log_probs: Tensor, step: int, last: bool) -> tuple[Tensor | None, Tensor]:
        """(rows to continue from, None: the same rows; each one's next token)."""
        raise NotImplementedError


class Greedy(Search):
    """The likeliest word at every step: the notes' greedy search, one row per input."""

    def __init__(self, rules: Rules, per_input: int = 1):
        super().__init__(per_input, rules)
        self.scores: list[Tensor] = []

    def choose(self, log_probs: Tensor) -> Tensor:
        return log_probs.max(dim=-1).indices   # the first maximum, like argmax, and faster

    def advance(self, log_probs: Tensor, step: int, last: bool) -> tuple[None, Tensor]:
        if step == 0:
            self.never = self.rules.never_emit(log_probs.size(-1), log_probs.device)
            self.finished = torch.zeros(self.rows, dtype=torch.bool, device=log_probs.device)
        log_probs = log_probs + self.never
        chosen = self.choose(self.rules.steer(log_probs, self.history, step, self.sources))
        self.scores.append(log_probs.gather(1, chosen.unsqueeze(1)).squeeze(1))
        self.history = torch.cat([self.history, chosen.unsqueeze(1)], dim=1)
        self.finished |= chosen == EOS
        self.done = bool(self.finished.all())
        return None, chosen

    def results(self) -> list[list[Hypothesis]]:
        """Per input, its rows' replies (cut after EOS) with their log-probabilities."""
        scores = torch.stack(self.scores, dim=1).double().tolist()
        found = []
        for tokens, row_scores in zip(self.history.tolist(), scores, strict=True):
            kept = tokens[:tokens.index(EOS) + 1] if EOS in tokens else tokens
            found.append((kept, sum(row_scores[:len(kept)])))
        n = self.per_input
        return [found[i:i + n] for i in range(0, len(found), n)]


class Sampling(Greedy):
    """A word drawn at every step under temperature, top-k and top-p; `n` rows per input."""

    def __init__(self, n: int, options: DecodeOptions, generator: torch.Generator | None,
                 rules: Rules):
        super().__init__(rules, per_input=n)
        self.options, self.generator = options, generator

    def choose(self, log_probs: Tensor) -> Tensor:
        return sample_tokens(log_probs, self.options, self.generator)


class Beam(Search):
    """Beam search: each input keeps `k` live hypotheses, extended by their best next words.

    A hypothesis that emits EOS is set aside as finished; an input is done once it has `k`
    finished ones (or after the last step, when its live ones count as finished, without
    EOS). `results` ranks the finished ones by score / length ** length_penalty, the length
    counting EOS. With steering `Rules` the ranking uses the steered scores.
    """

    reorders = True

    def __init__(self, k: int, length_penalty: float, rules: Rules):
        super().__init__(k, rules)
        self.k, self.length_penalty = k, length_penalty

    def start(self, inputs: list[list[int]], device: torch.device) -> Tensor:
        self.batch = batch = len(inputs)
        # Only the first hypothesis is live at first, so step 0 does not pick k copies.
        self.search_scores = torch.full((batch, self.k), -math.inf, device=device)
        self.search_scores[:, 0] = 0.0
        self.model_scores = self.search_scores.clone()
        # (tokens, the model's log-prob, the search's score) of each input's finished ones
        self.finished: list[list[tuple[list[int], float, float]]] = [[] for _ in range(batch)]
        self.input_done = [False] * batch
        return super().start(inputs, device)

    def advance(self, log_probs: Tensor, step: int, last: bool) -> tuple[Tensor, Tensor]:
        batch, k, vocab = self.batch, self.k, log_probs.size(-1)
        if step == 0:
            self.never = self.rules.never_emit(vocab, log_probs.device)
        log_probs = log_probs.float() + self.never
        steered = self.rules.steer(log_probs, self.history, step, self.sources)
        totals = (self.search_scores.unsqueeze(2) + steered.view(batch, k, vocab)).view(batch, -1)
        # 2k candidates: even if k of them end in EOS, k live ones remain.
        top_scores, top_index = totals.topk(min(2 * k, totals.size(1)), dim=1)
        model_totals = self.model_scores.unsqueeze(2) + log_probs.view(batch, k, vocab)
        top_model = model_totals.view(batch, -1).gather(1, top_index).tolist()
        top_scores, top_index = top_scores.tolist(), top_index.tolist()
        history = self.history.tolist()
        rows, tokens, scores, model_scores = [], [], [], []
        for b in range(batch):
            live = []
            for score, model_score, index in zip(top_scores[b], top_model[b], top_index[b],
                                                 strict=True):
                if score == -math.inf or len(live) == k:
                    break
                origin, token = b * k + index // vocab, index % vocab
                if token != EOS:
                    live.append((origin, token, score, model_score))
                elif not self.input_done[b]:
                    self.finished[b].append((history[origin] + [EOS], model_score, score))
            if not self.input_done[b] and (len(self.finished[b]) >= k or last):
                if last:  # out of steps: the live hypotheses count as finished, without EOS
                    self.finished[b].extend((history[o] + [t], m, s) for o, t, s, m in live)
                self.input_done[b] = True
            live += [(b * k, PAD, -math.inf, -math.inf)] * (k - len(live))  # dead rows
            for origin, token, score, model_score in live:
                rows.append(origin)
                tokens.append(token)
                scores.append(score)
                model_scores.append(model_score)
        self.done = all(self.input_done)
        device = log_probs.device
        parents, chosen = torch.tensor(rows, device=device), torch.tensor(tokens, device=device)
        self.search_scores = torch.tensor(scores, device=device).view(batch, k)
        self.model_scores = torch.tensor(model_scores, device=device).view(batch, k)
        self.history = torch.cat([self.history[parents], chosen.unsqueeze(1)], dim=1)
        return parents, chosen

    def results(self) -> list[list[Hypothesis]]:
        def rank(item: tuple[list[int], float, float]) -> float:
            return item[2] / (max(len(item[0]), 1) ** self.length_penalty)
        # A vocabulary of specials alone leaves nothing to choose: reply with nothing.
        return [[(tokens, model) for tokens, model, _ in sorted(found, key=rank, reverse=True)]
                or [([], -math.inf)] for found in self.finished]


# --- the three decoders, each on its own ------------------------------------------------------

def greedy(model: Seq2Seq, inputs: list[list[int]], max_length: int,
           rules: Rules = Rules()) -> list[Hypothesis]:
    """The greedy reply to each input."""
    search = Greedy(rules)
    run(model, inputs, max_length, search)
    return [found[0] for found in search.results()]


def sample(model: Seq2Seq, inputs: list[list[int]], max_length: int, n: int,
           options: DecodeOptions, generator: torch.Generator | None,
           rules: Rules = Rules()) -> list[list[Hypothesis]]:
    """`n` sampled replies to each input (temperature, top-k, top-p from `options`)."""
    search = Sampling(n, options, generator, rules)
    run(model, inputs, max_length, search)
    return search.results()


def beam_search(model: Seq2Seq, inputs: list[list[int]], max_length: int, beam_size: int,
                length_penalty: float = 1.0, rules: Rules = Rules()) -> list[list[Hypothesis]]:
    """Each input's finished beam hypotheses, best first (see `Beam`)."""
    search = Beam(beam_size, length_penalty, rules)
    run(model, inputs, max_length, search)
    return search.results()


# --- drawing a word -----------------------------------------------------------------------------

def filter_for_sampling(log_probs: Tensor, options: DecodeOptions) -> Tensor:
    """Temperature, then top-k, then top-p (nucleus) on (B, V) log-probs -> logits to sample."""
    # Shift the best to 0 first: a tiny temperature then sends the others to -inf, not all
    # of them (the best included) to -inf, which would leave nothing to sample.
    logits = (log_probs - log_probs.amax(dim=-1, keepdim=True)) / options.temperature
    if options.top_k > 0 and options.top_k < logits.size(-1):
        # Exactly k tokens, even when probabilities tie at the k-th place.
        top = logits.topk(options.top_k, dim=-1)
        logits = torch.full_like(logits, -math.inf).scatter(-1, top.indices, top.values)
    if options.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the mass before it already reaches top_p; the top token stays.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= options.top_p
        drop_sorted[..., 0] = False   # a top_p below float32's resolution still keeps one
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, -math.inf)
    return logits


# Sampling draws from at most this many likeliest words when that is exact: with top-k up to
# it, or with top-p when these words already hold top_p of the mass (for the default-recipe
# Cornell run, top-p 0.9: 84% of sampling steps of a batch of 8; 256 words: 19%). Sorting the
# whole vocabulary, and drawing from all of it, took 5 of a sampled step's 7 ms at batch 8.
SHORTLIST = 1024


def sample_tokens(log_probs: Tensor, options: DecodeOptions,
                  generator: torch.Generator | None) -> Tensor:
    """One token per row of (B, V) log-probs, drawn under temperature, top-k and top-p;
    the same draw as from `filter_for_sampling`'s whole distribution, computed on a shortlist
    of the likeliest words where that is exact."""
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
        full = filter_for_sampling(log_probs, options).softmax(dim=-1)
        return torch.multinomial(full, 1, generator=generator).squeeze(1)
    if options.top_p < 1.0:   # the same rule as filter_for_sampling, on sorted words
        drop = (probs.cumsum(dim=-1) - probs) >= options.top_p
        drop[..., 0] = False
        probs = probs.masked_fill(drop, 0.0)
    chosen = top.indices.gather(-1, torch.multinomial(probs, 1, generator=generator)).squeeze(1)
    if wide is not None and bool(wide.any()):
        full = filter_for_sampling(log_probs[wide], options).softmax(dim=-1)
        chosen[wide] = torch.multinomial(full, 1, generator=generator).squeeze(1)
    return chosen
