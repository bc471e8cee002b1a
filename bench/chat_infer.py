"""Chatbot inference speed on the CPU: torchtutor's decoders against the tutorial's searcher.

Model: the tutorial's size (hidden 500, 2 encoder + 2 decoder GRU layers, dot attention,
vocabulary from the Cornell data as `chat prepare` builds it). By default *untrained*, with
`tutorial_compat=True` so both sides compute the same function; an untrained model seldom
says EOS, so torchtutor's greedy search (which stops at EOS) runs all `max_length` steps too.
`--run RUN_DIR` uses a trained run instead (train it with --tutorial-compat for the reply
check); its replies end at EOS, which the notes' searcher ignores.

torchtutor's greedy search is timed two ways: "greedy" with the trained weights (what `chat
talk/reply --decoder greedy` does) and "greedy --int8" on the approximate int8 copy (what
`--int8` does); the share of int8 replies equal to the fp32 ones is printed.

Tutorial side: a re-implementation, written for this bench, of the notes' EncoderRNN,
LuongAttnDecoderRNN (dot) and GreedySearchDecoder, sharing the same weights, driven the way the
notes' `evaluate` does it: normalize, index, one input at a time, all 10 steps, with autograd
ON (the notes never turn it off) and softmax probabilities as scores.

"aoti greedy" and "onnxruntime greedy" are the folders `chat export --format aoti|onnx`
writes, driven by their own chatbot.py loop (fp32; `--no-compiled` skips them: compiling takes
minutes).

Prints median and p95 milliseconds per reply at batch 1 (greedy, beam 5, tutorial greedy),
replies/s at batch 64, and as its last line `greedy speedup: Rx` (tutorial median / greedy).

    python bench/chat_infer.py [--repeats 100] [--corpus PATH] [--run RUN_DIR] [--threads N]
                               [--no-compiled]
"""

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from torchtutor.chat.data.prepare import PrepareConfig, prepare_data
from torchtutor.chat.data.text import normalize
from torchtutor.chat.data.vocab import EOS, PAD, SOS, Vocab
from torchtutor.chat.fast.int8 import int8_chatbot
from torchtutor.chat.infer.chatbot import Chatbot
from torchtutor.chat.infer.options import DecodeOptions
from torchtutor.chat.model import ModelConfig, Seq2Seq

REPO = Path(__file__).resolve().parents[1]
SHARED_CORNELL = REPO.parent / "shared" / "data" / "cornell"
MAX_LENGTH = 10


# --- the tutorial's modules, re-implemented (same maths, same call pattern) --------------------

class TutorialEncoder(nn.Module):
    def __init__(self, embedding: nn.Embedding, gru: nn.GRU, hidden_size: int):
        super().__init__()
        self.embedding, self.gru, self.hidden_size = embedding, gru, hidden_size

    def forward(self, input_seq, input_lengths, hidden=None):
        embedded = self.embedding(input_seq)
        packed = pack_padded_sequence(embedded, input_lengths)
        outputs, hidden = self.gru(packed, hidden)
        outputs, _ = pad_packed_sequence(outputs)
        outputs = outputs[:, :, :self.hidden_size] + outputs[:, :, self.hidden_size:]
        return outputs, hidden


class TutorialDotAttention(nn.Module):
    def forward(self, hidden, encoder_outputs):
        energies = torch.sum(hidden * encoder_outputs, dim=2).t()
        return F.softmax(energies, dim=1).unsqueeze(1)


class TutorialDecoder(nn.Module):
    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.n_layers = model.config.decoder_layers
        self.embedding, self.embedding_dropout = model.embedding, model.embedding_dropout
        self.gru, self.concat, self.out = model.decoder_gru, model.concat, model.out
        self.attn = TutorialDotAttention()

    def forward(self, input_step, last_hidden, encoder_outputs):
        embedded = self.embedding_dropout(self.embedding(input_step))
        rnn_output, hidden = self.gru(embedded, last_hidden)
        attn_weights = self.attn(rnn_output, encoder_outputs)
        context = attn_weights.bmm(encoder_outputs.transpose(0, 1))
        concat_input = torch.cat((rnn_output.squeeze(0), context.squeeze(1)), 1)
        output = self.out(torch.tanh(self.concat(concat_input)))
        return F.softmax(output, dim=1), hidden


class TutorialGreedySearch(nn.Module):
    def __init__(self, encoder: TutorialEncoder, decoder: TutorialDecoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, input_seq, input_length, max_length):
        encoder_outputs, encoder_hidden = self.encoder(input_seq, input_length)
        decoder_hidden = encoder_hidden[:self.decoder.n_layers]
        decoder_input = torch.ones(1, 1, dtype=torch.long) * SOS
        all_tokens = torch.zeros([0], dtype=torch.long)
        all_scores = torch.zeros([0])
        for _ in range(max_length):   # always all steps: the notes' searcher never stops early
            output, decoder_hidden = self.decoder(decoder_input, decoder_hidden, encoder_outputs)
            scores, decoder_input = torch.max(output, dim=1)
            all_tokens = torch.cat((all_tokens, decoder_input), dim=0)
            all_scores = torch.cat((all_scores, scores), dim=0)
            decoder_input = torch.unsqueeze(decoder_input, 0)
        return all_tokens, all_scores


def tutorial_tokens(searcher: TutorialGreedySearch, vocab: Vocab, text: str) -> torch.Tensor:
    """The notes' `evaluate` for one line (autograd stays on)."""
    sentence = normalize(text)
    indexes = [[vocab.word2index[w] for w in sentence.split(" ")] + [EOS]]
    lengths = torch.tensor([len(i) for i in indexes])
    input_batch = torch.LongTensor(indexes).transpose(0, 1)
    tokens, _scores = searcher(input_batch, lengths, MAX_LENGTH)
    return tokens


def tutorial_reply(searcher: TutorialGreedySearch, vocab: Vocab, text: str) -> list[str]:
    """The notes' evaluateInput body for one line: evaluate, then drop EOS and PAD words."""
    words = [vocab.index2word[t.item()] for t in tutorial_tokens(searcher, vocab, text)]
    return [w for w in words if w not in (vocab.index2word[EOS], vocab.index2word[PAD])]


# --- measuring -------------------------------------------------------------------------------

def load_queries(corpus: str | None) -> tuple[Vocab, list[str], str]:
    spec = corpus or (str(SHARED_CORNELL) if SHARED_CORNELL.is_dir() else None)
    if spec is None:
        # No Cornell copy: a synthetic vocabulary of the size the tutorial reports (7,826).
        # Words of letters only: normalization drops digits, so "w12" would become "w".
        words = ["".join(chr(97 + (i // 26**k) % 26) for k in range(3)) for i in range(7823)]
        vocab = Vocab(has_unk=False)
        vocab.add_counts({w: 1 for w in words})
        rng = random.Random(0)
        queries = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 9)))
                   for _ in range(500)]
        return vocab, queries, "synthetic 7,826-word vocabulary"
    data = prepare_data(PrepareConfig(corpus=spec, has_unk=False))
    queries = [q for q, _ in data.splits["test"]]
    return data.vocab, queries, f"{spec} (test-split queries, notes' preparation)"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def exported_bots(bot) -> dict:
    """The AOTInductor and ONNX export folders of `bot`, loaded by their own chatbot.py code."""
    import atexit
    import shutil
    import tempfile

    from torchtutor.chat.export import package
    from torchtutor.chat.export.onnx import export_onnx
    from torchtutor.chat.export.template import Chatbot as ExportedChatbot

    out = {}
    folder = Path(tempfile.mkdtemp(prefix="chat-infer-export-"))
    atexit.register(shutil.rmtree, folder, True)   # the loaded graphs need it until the end
    for backend, name in (("aoti", package.PACKAGE), ("onnx", package.ONNX_FOLDER)):
        def fill(work: Path, backend=backend, name=name) -> dict:
            if backend == "aoti":
                package.compile_aoti(bot.model, work / name, print)
            else:
                export_onnx(bot.model, work / name, print)
            return package.settings_for(bot, backend, name, "bench")
        started = time.perf_counter()
        written = package.write_folder(str(folder / backend), fill)
        print(f"{backend} export written in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
        label = "aoti greedy" if backend == "aoti" else "onnxruntime greedy"
        out[label] = ExportedChatbot(str(written))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100, help="replies timed per decoder")
    parser.add_argument("--corpus", default=None, help="Cornell folder for vocab and queries")
    parser.add_argument("--run", default=None, help="a trained run folder (default: untrained)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--no-compiled", action="store_true",
                        help="skip the AOTInductor and onnxruntime exports")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    vocab, queries, source = load_queries(args.corpus)
    if args.run:
        bot = Chatbot.load(args.run, "cpu")
        model, trained = bot.model, f"trained run {args.run}"
        if bot.vocab.index2word != vocab.index2word:   # the run's own vocabulary and queries
            vocab = bot.vocab
            queries = [q for q in queries if all(w in vocab for w in q.split(" "))]
    else:
        torch.manual_seed(0)
        model = Seq2Seq(ModelConfig(vocab_size=len(vocab), hidden_size=500, encoder_layers=2,
                                    decoder_layers=2, attention="dot", dropout=0.1,
                                    tutorial_compat=True)).eval()
        bot = Chatbot(model=model, vocab=vocab, max_length=MAX_LENGTH)
        trained = "untrained"
    fast = int8_chatbot(bot)
    hidden = model.config.hidden_size
    searcher = TutorialGreedySearch(TutorialEncoder(model.embedding, model.encoder_gru, hidden),
                                    TutorialDecoder(model)).eval()
    rng = random.Random(1)
    timed = [rng.choice(queries) for _ in range(args.repeats)]

    greedy, beam = DecodeOptions(), DecodeOptions(method="beam", beam_size=5)
    # Same function on both sides: compare the replies up to the first EOS (the notes'
    # searcher does not rule out PAD or SOS, so skip inputs where it picks them).
    agree = total = 0
    for text in timed[:30]:
        theirs = tutorial_tokens(searcher, vocab, text).tolist()
        theirs = theirs[:theirs.index(EOS)] if EOS in theirs else theirs
        if PAD not in theirs and SOS not in theirs:
            total += 1
            agree += bot.reply_batch([text], greedy)[0].words == vocab.decode(theirs)
    check = queries[:1000]
    exact = bot.reply_batch(check, greedy)
    int8_same = sum(a.text == b.text for a, b in zip(exact, fast.reply_batch(check, greedy),
                                                     strict=True))
    # On a near-flat (untrained) model fp32 itself picks other words at batch 1 than in a
    # padded batch (21/150 equal in one check), so the compiled graphs are checked at both.
    exact_b1 = [bot.reply_batch([t], greedy)[0] for t in check]
    compiled = {} if args.no_compiled else exported_bots(bot)
    compiled_same = {name: (sum(a.text == b["reply"] for a, b in
                                zip(exact, loaded.replies(check), strict=True)),
                            sum(a.text == loaded.replies([a_text])[0]["reply"]
                                for a, a_text in zip(exact_b1[:200], check, strict=False)))
                     for name, loaded in compiled.items()}
    runners = {
        "tutorial greedy": lambda t: tutorial_reply(searcher, vocab, t),
        "greedy": lambda t: bot.reply_batch([t], greedy),
        "greedy --int8": lambda t: fast.reply_batch([t], greedy),
        "beam 5": lambda t: bot.reply_batch([t], beam),
        "beam 5 --int8": lambda t: fast.reply_batch([t], beam),
    }
    for name, loaded in compiled.items():
        runners[name] = lambda t, loaded=loaded: loaded.replies([t])
    for text in timed[:5]:   # warm-up
        for run in runners.values():
            run(text)
    times: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for text in timed:
        # Interleaved, so load from other processes hits all alike, and in a fresh order for
        # each query: what ran just before changes a reply's time (the default greedy took
        # 4.4 ms right after the tutorial's searcher, 4.0 ms after fp32 greedy or a 5 ms pause,
        # 3.7 ms after itself), and a fixed order would hand one decoder the same neighbour
        # every time.
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            runners[name](text)
            times[name].append((time.perf_counter() - start) * 1000)

    batch_texts = [rng.choice(queries) for _ in range(64)]
    throughput = {}
    for name, (which, options) in {"greedy": (bot, greedy),
                                   "greedy --int8": (fast, greedy),
                                   "beam 5": (bot, beam),
                                   "beam 5 --int8": (fast, beam)}.items():
        which.reply_batch(batch_texts, options)
        rounds, start = 0, time.perf_counter()
        while rounds < 3 or time.perf_counter() - start < 2.0:
            which.reply_batch(batch_texts, options)
            rounds += 1
        throughput[name] = rounds * 64 / (time.perf_counter() - start)
    lengths = [len(r.words) for r in bot.reply_batch(check, greedy)]

    c = model.config
    print(f"model: hidden {c.hidden_size}, {c.encoder_layers}+{c.decoder_layers} GRU layers, "
          f"{c.attention} attention, vocab {len(vocab):,}, {trained} (weights shared by both "
          f"sides, tutorial_compat={c.tutorial_compat}); max length {bot.max_length}")
    print(f"queries: {source}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"same replies as the tutorial searcher on {agree}/{total} checked inputs; "
          f"fp32 greedy replies average {statistics.mean(lengths):.1f} words")
    print(f"--int8 replies equal to fp32 ones: {int8_same}/{len(check)} (batched)")
    for name, (same, same_b1) in compiled_same.items():
        print(f"{name} replies equal to fp32 greedy ones: {same}/{len(check)} batched, "
              f"{same_b1}/{min(200, len(check))} at batch 1")
    print()
    print(f"{'decoder':<18} {'median ms':>10} {'p95 ms':>8} {'replies/s b1':>13} "
          f"{'replies/s b64':>14}")
    for name, values in times.items():
        median = statistics.median(values)
        batch = f"{throughput[name]:14.1f}" if name in throughput else f"{'-':>14}"
        print(f"{name:<18} {median:10.2f} {percentile(values, 0.95):8.2f} "
              f"{1000 / median:13.1f} {batch}")
    tutorial = statistics.median(times["tutorial greedy"])
    print(f"greedy speedup: {tutorial / statistics.median(times['greedy']):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
