"""Decoding options: what each search is asked to do, checked, and the default decoder.

Kept free of torch so that `torchtutor --help` (which shows these defaults) stays fast;
`chat.infer.chatbot` turns them into the searches of `chat.infer.search`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from torchtutor.runtime.errors import UserError

METHODS = ("greedy", "beam", "sample")
RERANKERS = ("none", "mmi")
DEFAULT_BATCH = 64   # inputs decoded together; larger lists are split into chunks
# Bounds that keep a search's memory and arithmetic sane; the server uses the same ones.
MAX_BEAM = 16
MAX_CANDIDATES = 64
MAX_NO_REPEAT = 10
MAX_TEMPERATURE = 100.0   # any positive temperature works (_filter_for_sampling)
# The smallest temperature float32 holds: the decoder divides float32 logits by it, and a
# smaller one (5e-324, say) rounds to 0 there, so that 0/0 gives NaN probabilities (1e-300
# crashed sampling so). Any temperature from here up works: the best word is shifted to 0
# before the division, so the others go to -inf, never it.
MIN_TEMPERATURE = 2.0**-149
MAX_SEED = 2**63 - 1
MAX_MIN_LENGTH = 1000
MAX_TOP_K = 10**9
# (lowest, highest), both allowed
LENGTH_PENALTY_RANGE = (-10.0, 10.0)
MMI_WEIGHT_RANGE = (-50.0, 50.0)
LENGTH_BONUS_RANGE = (-10.0, 10.0)
REPETITION_PENALTY_RANGE = (1.0, 100.0)   # 1: off; below 1 would favour repeats


@dataclass
class DecodeOptions:
    method: str = "greedy"
    beam_size: int = 5
    length_penalty: float = 1.0
    n_best: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    no_repeat_ngram: int = 0
    seed: int | None = None
    rerank: str = "none"               # none | mmi (needs the run's backward model)
    mmi_weight: float = 1.0            # lambda: weight of log p(query | reply)
    length_bonus: float = 0.0          # gamma: added per reply word
    candidates: int = 0                # sampled replies added to the decoder's hypotheses
    min_length: int = 0                # no EOS before this many words
    repetition_penalty: float = 1.0    # a word already in the reply is this many times less
                                       # likely to be chosen again (1: off)
    no_repeat_token: bool = False      # never the same token twice in a row ("!!", "fine fine")
    no_copy_ngram: int = 0             # never an n-gram of the user's message, 0: off

    def check(self) -> None:
        """One-line UserError for options that make no sense or would not finish."""
        if self.method not in METHODS:
            raise UserError(f"unknown decoder {self.method!r}; use one of {', '.join(METHODS)}")
        if self.rerank not in RERANKERS:
            raise UserError(f"unknown reranker {self.rerank!r}; use one of "
                            f"{', '.join(RERANKERS)}")
        _check_int("--beam-size", self.beam_size, 1, MAX_BEAM)
        _check_int("--n-best", self.n_best, 1, MAX_BEAM + MAX_CANDIDATES)
        _check_int("--candidates", self.candidates, 0, MAX_CANDIDATES)
        _check_int("--min-length", self.min_length, 0, MAX_MIN_LENGTH)
        _check_int("--top-k", self.top_k, 0, MAX_TOP_K)
        _check_int("--no-repeat-ngram", self.no_repeat_ngram, 0, MAX_NO_REPEAT)
        _check_int("--no-copy-ngram", self.no_copy_ngram, 0, MAX_NO_REPEAT)
        if not isinstance(self.no_repeat_token, bool):
            raise UserError(f"--no-repeat-token must be true or false, not "
                            f"{self.no_repeat_token!r}")
        if self.seed is not None:
            _check_int("--seed", self.seed, 0, MAX_SEED)
        pool = self.beam_size if self.method == "beam" else 1
        if self.rerank == "mmi":
            pool = (0 if self.method == "sample" else pool) + self.candidates
            if pool < 1:
                raise UserError("--decoder sample with --rerank mmi needs --candidates 1 or more")
        if self.n_best > pool:
            what = "--beam-size" if self.rerank == "none" else "the candidates reranked"
            raise UserError(f"--n-best {self.n_best} is more than {what} ({pool})")
        if self.temperature == 0:
            raise UserError("--temperature must be above 0 (use --decoder greedy for the "
                            "likeliest word)")
        _check_float("--temperature", self.temperature, MIN_TEMPERATURE, MAX_TEMPERATURE)
        _check_float("--length-penalty", self.length_penalty, *LENGTH_PENALTY_RANGE)
        _check_float("--mmi-weight", self.mmi_weight, *MMI_WEIGHT_RANGE)
        _check_float("--length-bonus", self.length_bonus, *LENGTH_BONUS_RANGE)
        _check_float("--repetition-penalty", self.repetition_penalty, *REPETITION_PENALTY_RANGE)
        if not (isinstance(self.top_p, (int, float)) and 0.0 < self.top_p <= 1.0):
            raise UserError(f"--top-p must be in (0, 1], not {self.top_p}")


def _check_int(flag: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"{flag} must be a whole number from {low} to {high}, not {value}")


def _check_float(flag: str, value: Any, low: float, high: float) -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or not low <= value <= high):
        raise UserError(f"{flag} must be a number from {low:g} to {high:g}, not {value}")


# What `talk`, `reply`, `evaluate` and `serve` use when no decoding flag says otherwise, for a
# run with a backward model: beam search's 8 hypotheses plus 8 nucleus samples, reranked by
# MMI with a strong weight and a length bonus. Chosen on the whole Cornell *validation* split
# (bench/chat_quality.py --grid, bench/RESULTS.md): beam alone left at most ~24% of replies
# unique whatever the weight; the samples bring the variety, and a smaller beam leaves them a
# larger share of the pool (beam 8 + 8 samples beat beam 16 + 8 on BLEU, distinct-2 and unique
# replies at every weight, and costs less); weight 12 with bonus 4 beat bonus 2 and 3 on all
# of them, and weight 16 lost BLEU for little else.
BEST_DECODING = DecodeOptions(method="beam", beam_size=8, rerank="mmi", mmi_weight=12.0,
                              length_bonus=4.0, candidates=8, top_p=0.9, seed=0)
# A run without a backward model (trained with --no-backward, or before it existed).
PLAIN_DECODING = DecodeOptions()


def default_options(has_backward: bool) -> DecodeOptions:
    return BEST_DECODING if has_backward else PLAIN_DECODING


def resolve_options(given: dict[str, Any], has_backward: bool,
                    defaults: DecodeOptions | None = None) -> DecodeOptions:
    """`defaults` (else the default decoder for the run) with the `given` fields on top,
    checked. A decoder named without a reranker is that decoder alone (naming only
    `--decoder greedy` gives the notes' greedy search, no reranking).

    `given` holds the fields a user set, such as cli.py's decoding flags or a request to
    the server; the fields left out keep the defaults' values."""
    given = dict(given)
    if defaults is None:
        defaults = default_options(has_backward)
        if "method" in given and "rerank" not in given:
            defaults = PLAIN_DECODING
        elif given.get("rerank") == "mmi" and "method" not in given:
            defaults = dataclasses.replace(defaults, method=BEST_DECODING.method)
    elif "method" in given and "rerank" not in given:
        given["rerank"] = "none"
    options = dataclasses.replace(defaults, **given)
    options.check()
    if options.rerank == "mmi" and not has_backward:
        raise UserError("--rerank mmi needs the run's backward model (RUN_DIR/backward); "
                        "train one with `chat train --direction backward --out RUN_DIR`")
    return options

