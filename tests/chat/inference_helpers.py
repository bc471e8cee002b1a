"""Small stand-in chatbots for the inference tests (no training, no run folder).

`ScriptedModel` has the contract's Seq2Seq methods but its next-token distribution is a fixed
table indexed by the previous token, so tests can build exact cases (greedy vs beam, repeats).
`EchoModel` replies with the input's tokens, so batching, EOS handling and truncation show up
in the text. `tiny_bot` wraps a real, randomly initialised Seq2Seq.
"""

import functools
import tempfile
from pathlib import Path

import torch
from torch import nn

from torchtutor.chat.data.batches import index_pairs, make_batch
from torchtutor.chat.data.text import normalize
from torchtutor.chat.data.vocab import EOS, Vocab
from torchtutor.chat.infer.chatbot import Chatbot
from torchtutor.chat.model import ModelConfig, Seq2Seq

SENTENCES = ["hello there !", "how are you ?", "i am fine thank you .", "what is your name ?",
             "my name is bot .", "good bye", "are you a robot ?", "yes i am .",
             "do you like music ?", "i like jazz and rock ."]


def make_vocab(has_unk: bool = True, sentences=SENTENCES) -> Vocab:
    vocab = Vocab(has_unk=has_unk)
    for s in sentences:
        vocab.add_sentence(normalize(s))
    return vocab


def bot_for(model: nn.Module, vocab: Vocab, max_length: int = 10) -> Chatbot:
    """A Chatbot around a stand-in model (no backward model)."""
    return Chatbot(model=model.eval(), vocab=vocab, max_length=max_length)


class _Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))   # so the decoders can find the device

    def encode(self, inputs, lengths):
        steps, batch = inputs.shape
        mask = torch.arange(steps).unsqueeze(1) < lengths.unsqueeze(0)
        outputs = torch.zeros(steps, batch, 4)
        # hidden row 0: the step counter; rows 1..: the input ids (for EchoModel)
        hidden = torch.zeros(1, batch, steps + 1)
        hidden[0, :, 1:] = inputs.t().float()
        return outputs, mask, hidden


class ScriptedModel(_Base):
    """log P(next | previous token) = log table[previous]; the input is ignored."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.log_table = table.clamp_min(1e-12).log()

    def decode_step(self, tokens, hidden, encoder_outputs, encoder_mask):
        weights = encoder_mask.t().float() / encoder_mask.sum(0).unsqueeze(1)
        return self.log_table[tokens].clone(), hidden, weights


class EchoModel(_Base):
    """Replies with the input's ids (which end in EOS), each with probability ~0.99."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size

    def decode_step(self, tokens, hidden, encoder_outputs, encoder_mask):
        step = hidden[0, :, 0].long()
        ids = hidden[0, :, 1:].long()
        lengths = encoder_mask.sum(0)
        target = torch.where(step < lengths, ids.gather(1, step.clamp(max=ids.size(1) - 1)
                                                        .unsqueeze(1)).squeeze(1),
                             torch.full_like(step, EOS))
        logits = torch.zeros(len(tokens), self.vocab_size)
        logits[torch.arange(len(tokens)), target] = 10.0
        hidden = hidden.clone()
        hidden[0, :, 0] += 1
        weights = torch.nn.functional.one_hot(step.clamp(max=encoder_mask.size(0) - 1),
                                              encoder_mask.size(0)).float()
        return logits.log_softmax(-1), hidden, weights


def probability_table(vocab_size: int, rows: dict[int, dict[int, float]]) -> torch.Tensor:
    """A (V, V) table: row = previous token, given entries, the rest of the mass spread evenly."""
    table = torch.zeros(vocab_size, vocab_size)
    for previous, entries in rows.items():
        rest = (1.0 - sum(entries.values())) / (vocab_size - len(entries))
        table[previous] = rest
        for token, p in entries.items():
            table[previous, token] = p
    return table


def tiny_bot(has_unk: bool = True, seed: int = 0, hidden: int = 16, max_length: int = 10,
             attention: str = "dot") -> Chatbot:
    vocab = make_vocab(has_unk)
    torch.manual_seed(seed)
    model = Seq2Seq(ModelConfig(vocab_size=len(vocab), hidden_size=hidden, dropout=0.0,
                                attention=attention))
    return bot_for(model, vocab, max_length)


BAD_INPUTS = ["", "   ", "zzyzx qwerty", "\U0001F600\U0001F680 \u2764\ufe0f",
              "\x00\x07\x1b[31m hello \x7f\r", " ".join(["hello"] * 1000),
              "caf\u00e9 na\u00efve \u0130stanbul", "\ud800 lone surrogate", "?!.", "\t\n"]


@functools.lru_cache(maxsize=4)
def trained_tiny_bot(has_unk: bool = True, steps: int = 100) -> Chatbot:
    """A tiny Seq2Seq fitted for a second to reply to each of SENTENCES with the next one, so
    its greedy replies differ from input to input (an untrained one says the same thing)."""
    vocab = make_vocab(has_unk)
    pairs = [(normalize(q), normalize(r)) for q, r in zip(SENTENCES, SENTENCES[1:] + SENTENCES[:1],
                                                          strict=True)]
    batch = make_batch(index_pairs(pairs, vocab))
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(vocab_size=len(vocab), hidden_size=32, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matrices: one thread avoids contention on a busy machine
    try:
        _fit(model, optimizer, batch, steps)
    finally:
        torch.set_num_threads(threads)
    return bot_for(model, vocab, max_length=10)


def _fit(model, optimizer, batch, steps: int) -> None:
    for _ in range(steps):
        encoder_outputs, encoder_mask, hidden = model.encode(batch.inputs, batch.lengths)
        log_probs = model.decode_teacher_forced(batch.targets, hidden, encoder_outputs,
                                                encoder_mask)
        nll = -log_probs.gather(2, batch.targets.unsqueeze(2)).squeeze(2)
        loss = nll[batch.mask].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


_RUNS: dict[bool, Path] = {}


def tiny_run(has_unk: bool = True) -> Path:
    """A real run folder from `chat train` (tiny model, a few dozen steps on ChatterBot),
    built once per test process."""
    if has_unk not in _RUNS:
        from dataclasses import replace

        from torchtutor.chat.config import TUTORIAL, ModelConfig, PrepareConfig
        from torchtutor.chat.train.loop import train

        out = Path(tempfile.mkdtemp(prefix="torchtutor-inference-")) / "run"
        config = replace(
            TUTORIAL, out=str(out), steps=40, batch_size=32, lr=5e-3, decoder_lr_ratio=1.0,
            clip=1.0, eval_every=20, checkpoint_every=20, device="cpu", precision="fp32",
            tutorial_compat=not has_unk,
            data=PrepareConfig(corpus="chatterbot", max_length=10, min_count=1,
                               has_unk=has_unk),
            model=ModelConfig(hidden_size=24, encoder_layers=1, decoder_layers=1,
                              attention="general", dropout=0.0))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            train(config)
        finally:
            torch.set_num_threads(threads)
        _RUNS[has_unk] = out
    return _RUNS[has_unk]
