"""A trained chatbot: user text in, replies out.

    bot = Chatbot.load("runs/cornell")
    bot.reply("hello there").text        # "Hi."

`reply_batch` is the whole path from text to the chosen reply: normalize and look up the
words as in training (`prepare_input`), decode with the searches the options ask for
(`chat.infer.search`), rerank by MMI with the backward model when asked (`chat.infer.rerank`),
keep the best, and turn its tokens into English (`chat.infer.display`). Nothing here is a
speed-up: the default reply is the trained model's own choice (`chat.fast` holds the
approximate int8 copies a user may choose instead).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from torchtutor.chat import run_dir as rd
from torchtutor.chat.data.text import normalize, tokenize
from torchtutor.chat.data.vocab import EOS, Vocab
from torchtutor.chat.infer import rerank, search
from torchtutor.chat.infer.display import display_text
from torchtutor.chat.infer.options import DEFAULT_BATCH, DecodeOptions, default_options
from torchtutor.chat.model import Seq2Seq
from torchtutor.runtime.device import device_of, resolve_device


@dataclass
class Reply:
    text: str                       # what a person reads ("I'm fine.")
    score: float                    # log p(reply | input) under the model
    unknown_words: list[str]        # words of the input the vocabulary lacks
    truncated: bool                 # the input was longer than training's limit
    empty: bool                     # the input had no words to reply to
    alternatives: list[tuple[str, float]]   # the next best (text, score), ranks 2..n_best
    words: list[str] = field(default_factory=list)   # the reply's tokens ("i m fine .")


@dataclass
class PreparedInput:
    """One user text as the encoder sees it."""
    words: list[str]          # tokens after normalization and truncation (unknowns included)
    ids: list[int]            # ids fed to the encoder, EOS appended; [] when empty
    unknown_words: list[str]
    truncated: bool


def prepare_input(vocab: Vocab, text: str, max_length: int) -> PreparedInput:
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


@dataclass(frozen=True)
class Chatbot:
    """A trained run's model, its backward model (for MMI reranking) and its vocabulary."""
    model: Seq2Seq                  # in eval mode
    vocab: Vocab
    max_length: int                 # the data's limit: inputs and replies stay below it
    backward: Seq2Seq | None = None   # RUN_DIR/backward (reply -> query), when trained

    @classmethod
    def load(cls, run: str | os.PathLike, device: str = "auto",
             checkpoint: str = "best") -> Chatbot:
        """The run folder's `checkpoint` ("best" or "last") on `device`; a folder that is
        not a chat run raises UserError with a one-line message."""
        trained = rd.load_trained(run, resolve_device(device), checkpoint)
        return cls(model=trained.model, vocab=trained.vocab, max_length=trained.max_length,
                   backward=trained.backward)

    @property
    def default_options(self) -> DecodeOptions:
        """MMI-reranked beam and samples with a backward model, else greedy search."""
        return default_options(self.backward is not None)

    def reply(self, text: str, options: DecodeOptions | None = None) -> Reply:
        """The reply to one text (`options`: the default decoder when None)."""
        return self.reply_batch([text], options)[0]

    def reply_batch(self, texts: list[str], options: DecodeOptions | None = None,
                    batch_size: int = DEFAULT_BATCH,
                    on_chunk: Callable[[int], None] | None = None) -> list[Reply]:
        """Replies to `texts`, in order, decoded `batch_size` at a time (`on_chunk(n)` is told
        after each chunk of `n` texts: a progress bar's update)."""
        options = options or self.default_options
        options.check()
        generator = torch.Generator(device=device_of(self.model))
        if options.seed is not None:   # the same seed gives the same samples
            generator.manual_seed(options.seed)
        else:
            generator.seed()
        prepared = [prepare_input(self.vocab, text, self.max_length) for text in texts]
        replies = [Reply(text="", score=0.0, unknown_words=p.unknown_words,
                         truncated=p.truncated, empty=True, alternatives=[]) for p in prepared]
        live = [i for i, p in enumerate(prepared) if p.ids]
        for start in range(0, len(live), batch_size):
            chunk = live[start:start + batch_size]
            ranked = self.ranked_hypotheses([prepared[i].ids for i in chunk], options, generator)
            for i, hypotheses in zip(chunk, ranked, strict=True):
                # The chosen reply: the first of the ranked hypotheses (MMI's best, by default).
                (best, score), others = hypotheses[0], hypotheses[1:options.n_best]
                words = self.vocab.decode(best)
                replies[i] = Reply(text=display_text(words), score=score,
                                   unknown_words=prepared[i].unknown_words,
                                   truncated=prepared[i].truncated, empty=False, words=words,
                                   alternatives=[(display_text(self.vocab.decode(ids)), s)
                                                 for ids, s in others])
            if on_chunk is not None:
                on_chunk(len(chunk))
        return replies

    def ranked_hypotheses(self, inputs: list[list[int]], options: DecodeOptions,
                          generator: torch.Generator) -> list[list[search.Hypothesis]]:
        """Each input's replies, best first, as the options' decoder ranks them."""
        if options.rerank != "mmi":
            return self.candidates(inputs, options, generator)
        return rerank.mmi_rerank(self.backward, inputs,
                                 self.candidates(inputs, options, generator),
                                 options.mmi_weight, options.length_bonus)

    def candidates(self, inputs: list[list[int]], options: DecodeOptions,
                   generator: torch.Generator) -> list[list[search.Hypothesis]]:
        """What the decoder found for each input: its hypotheses in its own order, or for
        MMI the pool it reranks (the beam's hypotheses and the samples, repeats removed)."""
        rules = search.Rules(has_unk=self.vocab.has_unk, no_repeat_ngram=options.no_repeat_ngram,
                             min_length=options.min_length,
                             repetition_penalty=options.repetition_penalty,
                             no_repeat_token=options.no_repeat_token,
                             no_copy_ngram=options.no_copy_ngram)
        searches: list[search.Greedy | search.Beam] = []
        if options.method == "beam":
            searches.append(search.Beam(options.beam_size, options.length_penalty, rules))
        elif options.method == "greedy":
            searches.append(search.Greedy(rules))
        samples = options.candidates if options.rerank == "mmi" else 1
        if options.method == "sample" or (options.rerank == "mmi" and samples):
            searches.append(search.Sampling(samples, options, generator, rules))
        # MMI's beam hypotheses and samples share every decoder step.
        search.run(self.model, inputs, self.max_length, *searches)
        if options.rerank != "mmi":
            return searches[0].results()
        return rerank.pool(*(s.results() for s in searches), min_length=options.min_length)


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
