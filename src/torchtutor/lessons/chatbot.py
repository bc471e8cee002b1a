"""Lesson 5, the chatbot tutorial: corpus, normalization, vocabulary, padded batches, the
encoder, Luong attention, the decoder, the masked loss, training and greedy decoding.

Every step runs torchtutor's own code (`torchtutor.chat.*`) on real lines: Cornell from
--data PATH (only its first --max-lines lines, for speed), else the bundled ChatterBot corpus.
The model keeps the notes' architecture (shared embedding, 2-layer bidirectional GRU encoder,
dot attention, 2-layer GRU decoder) at hidden size HIDDEN instead of 500, so that training it
for a few seconds is enough to make greedy decoding reply and stop at EOS.

Each helper returns what its step prints, so the tests check the claims.
"""

import random
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from torchtutor.chat.data.batches import index_pairs, make_batch
from torchtutor.chat.data.corpus import (
    Corpus,
    chatterbot_english_dir,
    load_corpus,
    read_pairs_file,
    write_pairs_file,
)
from torchtutor.chat.data.prepare import PrepareConfig, PreparedData, prepare_data
from torchtutor.chat.data.text import normalize, tokenize, unicode_to_ascii
from torchtutor.chat.data.vocab import EOS, PAD, SOS, UNK, Vocab
from torchtutor.chat.infer import search
from torchtutor.chat.infer.chatbot import prepare_input
from torchtutor.chat.infer.display import display_text
from torchtutor.chat.model import LuongAttention, ModelConfig, Seq2Seq
from torchtutor.chat.train.objective import Objective
from torchtutor.lessons.narration import Narrator
from torchtutor.lessons.runner import LessonConfig, run_lesson
from torchtutor.runtime.checkpoint import load_checkpoint, save_checkpoint
from torchtutor.runtime.errors import UserError

MAX_LENGTH = 10          # the notes' values
MIN_COUNT = 3
CLIP = 50.0
TEACHER_FORCING_RATIO = 1.0
DECODER_LEARNING_RATIO = 5.0
HIDDEN = 64              # the notes: 500; small enough to train here in seconds
LEARNING_RATE = 0.003    # the notes: 0.0001 over 4000 iterations; this many fewer need more
ITERATIONS = 120
PRINT_EVERY = 20
TRAIN_PAIRS = 64         # the training batch: these pairs, every iteration
SMALL_BATCH_SIZE = 5
CORNELL_FILES = ("movie_lines.txt", "movie_conversations.txt")
_LINE_ID = re.compile(r"L\d+")


@dataclass
class LessonCorpus:
    raw_file: Path           # the file the raw lines come from
    raw_lines: list[str]
    corpus: Corpus           # raw (query, reply) pairs, as torchtutor's reader gives them
    prepared: PreparedData   # what `chat prepare` makes of them
    sliced: str              # how much of the corpus was read, in words


def _cornell_folder(spec: str) -> Path | None:
    path = Path(spec).expanduser()
    return path if path.is_dir() and all((path / f).is_file() for f in CORNELL_FILES) else None


def slice_cornell(folder: Path, max_lines: int, out: Path) -> tuple[Path, str]:
    """The first `max_lines` lines of movie_lines.txt and the conversations wholly inside them,
    written to `out` in the original format (iso-8859-1 bytes untouched)."""
    lines = (folder / "movie_lines.txt").read_bytes().split(b"\n")
    lines = [line for line in lines if line.strip()]
    kept = lines[:max_lines] if max_lines > 0 else lines
    ids = {line.split(b" ", 1)[0].decode("ascii", "replace") for line in kept}
    conversations = [c for c in (folder / "movie_conversations.txt").read_bytes().split(b"\n")
                     if c.strip() and all(i in ids for i in _LINE_ID.findall(c.decode("latin-1")))]
    out.mkdir(parents=True, exist_ok=True)
    (out / "movie_lines.txt").write_bytes(b"\n".join(kept) + b"\n")
    (out / "movie_conversations.txt").write_bytes(b"\n".join(conversations) + b"\n")
    return out, (f"the first {len(kept):,} of {len(lines):,} lines and the "
                 f"{len(conversations):,} conversations inside them")


def _first_lines(path: Path, count: int) -> list[str]:
    with open(path, "rb") as f:
        return [f.readline().decode("iso-8859-1").rstrip("\r\n") for _ in range(count)]


def load_lesson_corpus(spec: str = "chatterbot", max_lines: int = 20000,
                       max_length: int = MAX_LENGTH, min_count: int = MIN_COUNT,
                       ) -> LessonCorpus:
    """Read the corpus with torchtutor's reader and prepare it as `chat prepare` does."""
    with tempfile.TemporaryDirectory() as work:
        source = spec
        sliced = "all of it"
        if (folder := _cornell_folder(spec)) is not None:
            raw_file = folder / "movie_lines.txt"
            if max_lines > 0:
                sliced_folder, sliced = slice_cornell(folder, max_lines, Path(work) / "cornell")
                source = str(sliced_folder)
        elif spec == "chatterbot":
            raw_file = sorted(chatterbot_english_dir().glob("*.yml"))[0]
        else:
            path = Path(spec).expanduser()
            if not path.is_file():
                raise UserError(f"--data {spec}: give a Cornell folder (movie_lines.txt and "
                                "movie_conversations.txt), a corpus file, or 'chatterbot'")
            raw_file = path
        corpus = load_corpus(source)
        prepared = prepare_data(PrepareConfig(corpus=source, max_length=max_length,
                                              min_count=min_count))
    return LessonCorpus(raw_file, _first_lines(raw_file, 10), corpus, prepared, sliced)


def formatted_file_lines(corpus: Corpus, count: int = 5) -> tuple[list[str], int]:
    """Write the notes' formatted pair file with torchtutor's writer; its first lines and how
    many pairs read back."""
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "formatted_movie_lines.txt"
        write_pairs_file(path, corpus.pairs)
        lines = path.read_text(encoding="utf-8").splitlines()[:count]
        pairs_back = len(read_pairs_file(path).pairs)
    return lines, pairs_back


def normalization_examples(corpus: Corpus, count: int = 4) -> list[tuple[str, str, str]]:
    """(raw, unicode_to_ascii(raw), normalize(raw)): an accented sentence, then corpus lines
    that normalization changes most visibly (capitals, punctuation, symbols)."""
    texts = ["Ça va? J'ai vu «Amélie» 3 fois... Très bien!"]
    for pair in corpus.pairs:
        text = pair.query
        if len(text) < 60 and re.search(r"[A-Z]", text) and re.search(r"[,'!?.]", text) \
                and text not in texts:
            texts.append(text)
        if len(texts) == count:
            break
    return [(t, unicode_to_ascii(t), normalize(t)) for t in texts]


def filter_and_count(corpus: Corpus, max_length: int = MAX_LENGTH,
                     min_count: int = MIN_COUNT) -> dict[str, object]:
    """The notes' readVocs, filterPairs, Voc.addSentence and trimRareWords, written out on
    torchtutor's normalize and Vocab, to set against what `prepare_data` counted."""
    pairs = [(normalize(p.query), normalize(p.reply)) for p in corpus.pairs]
    # filterPair: both sides under max_length words (torchtutor also drops empty sides)
    short = [(q, r) for q, r in pairs if q and r and len(tokenize(q)) < max_length
             and len(tokenize(r)) < max_length]
    voc = Vocab()
    for q, r in short:
        voc.add_sentence(q)
        voc.add_sentence(r)
    counted = len(voc.word2count)
    voc.trim(min_count)
    kept = [(q, r) for q, r in short
            if all(w in voc for w in tokenize(q)) and all(w in voc for w in tokenize(r))]
    return {"read": len(pairs), "short": len(short), "counted": counted,
            "kept_words": len(voc.word2count), "kept_pairs": len(kept), "vocab": voc}


def pick_small_batch(pairs: list[tuple[str, str]], size: int = SMALL_BATCH_SIZE,
                     ) -> list[tuple[str, str]]:
    """`size` pairs with different query lengths, so the batch has padding to show."""
    chosen: dict[int, tuple[str, str]] = {}
    for q, r in pairs:
        chosen.setdefault(len(tokenize(q)), (q, r))
    by_length = [chosen[k] for k in sorted(chosen, reverse=True)]
    if len(by_length) < size:  # too few lengths: fill with whatever comes
        by_length += [p for p in pairs if p not in by_length][:size - len(by_length)]
    step = max(1, len(by_length) // size)
    return by_length[::step][:size]


def demo_packing(inputs: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """pack_padded_sequence keeps only real tokens, time step by time step; pad_packed_sequence
    puts the zeros back."""
    packed = pack_padded_sequence(inputs, lengths)
    unpacked, unpacked_lengths = pad_packed_sequence(packed)
    return {"data": packed.data, "batch_sizes": packed.batch_sizes, "unpacked": unpacked,
            "unpacked_lengths": unpacked_lengths}


def demo_encoder(model: Seq2Seq, inputs: torch.Tensor, lengths: torch.Tensor,
                 ) -> dict[str, torch.Tensor]:
    """The notes' EncoderRNN.forward by hand on the model's own layers, and model.encode."""
    embedded = model.embedding(inputs)                            # word indexes -> embeddings
    packed = pack_padded_sequence(embedded, lengths)              # pack padded batch
    outputs, hidden = model.encoder_gru(packed)                   # forward pass through GRU
    outputs, _ = pad_packed_sequence(outputs)                     # unpack padding
    both = outputs
    h = model.config.hidden_size
    summed = outputs[:, :, :h] + outputs[:, :, h:]                # sum bidirectional outputs
    encoder_outputs, encoder_mask, decoder_hidden = model.encode(inputs, lengths)
    return {"both_directions": both, "summed": summed, "final_hidden": hidden,
            "encoder_outputs": encoder_outputs, "encoder_mask": encoder_mask,
            "decoder_hidden": decoder_hidden,
            "notes_decoder_hidden": hidden[:model.config.decoder_layers]}


def demo_attention(model: Seq2Seq, encoder_outputs: torch.Tensor, encoder_mask: torch.Tensor,
                   decoder_hidden: torch.Tensor) -> dict[str, object]:
    """One decoder step's GRU output scored against the encoder outputs by each method."""
    torch.manual_seed(0)
    sos = torch.full((encoder_outputs.size(1),), SOS, dtype=torch.long,
                     device=encoder_outputs.device)
    rnn_output, _ = model.decoder_gru(model.embedding(sos).unsqueeze(0), decoder_hidden)
    h = model.config.hidden_size
    found: dict[str, object] = {"query": rnn_output}
    for method in ("dot", "general", "concat"):
        layer = model.attention if method == model.config.attention \
            else LuongAttention(method, h).to(encoder_outputs.device)
        scores = layer.scores(rnn_output, encoder_outputs)[:, 0]            # (B, T)
        _, masked = layer(rnn_output, encoder_outputs, encoder_mask)
        _, unmasked = layer(rnn_output, encoder_outputs, None)               # the notes
        found[method] = {"layer": layer, "scores": scores, "weights": masked[:, 0],
                         "weights_unmasked": unmasked[:, 0]}
    return found


def score_by_hand(method: str, layer: LuongAttention, query: torch.Tensor,
                  keys: torch.Tensor) -> torch.Tensor:
    """The notes' Attn.dot_score / general_score / concat_score for a (1, B, H) query."""
    if method == "dot":
        energy = torch.sum(query * keys, dim=2)
    elif method == "general":
        energy = torch.sum(query * layer.key_proj(keys), dim=2)
    else:  # self.attn(cat(hidden, encoder_output)).tanh(), then v . energy
        energy = torch.sum(layer.v * torch.tanh(layer.query_proj(query.expand_as(keys))
                                                + layer.key_proj(keys)), dim=2)
    return energy.t()                                                         # (B, T)


def masked_losses(model: Seq2Seq, batch) -> dict[str, float]:
    """The masked NLL three ways: by hand as the notes' maskNLLLoss, by torch's nll_loss, and
    by torchtutor's training objective; plus the notes' sum of per-step means."""
    model.eval()  # no dropout, so the three see the same numbers
    with torch.no_grad():
        encoder_outputs, encoder_mask, hidden = model.encode(batch.inputs, batch.lengths)
        log_probs = model.decode_teacher_forced(batch.targets, hidden, encoder_outputs,
                                                encoder_mask)                   # (T, B, V)
        probs = log_probs.exp()
        # maskNLLLoss: -log(gather(probs, target)), averaged over the mask's True entries
        cross_entropy = -torch.log(torch.gather(probs, 2, batch.targets.unsqueeze(2))
                                   .squeeze(2))
        by_hand = cross_entropy.masked_select(batch.mask).mean()
        library = F.nll_loss(log_probs[batch.mask], batch.targets[batch.mask])
        objective, _ = Objective(model)(batch.inputs, batch.lengths, batch.targets, batch.mask,
                                        [True] * batch.max_target_len)
        per_step = (cross_entropy * batch.mask).sum(1) / batch.mask.sum(1)
    model.train()
    return {"by_hand": by_hand.item(), "library": library.item(), "objective": objective.item(),
            "notes_sum_of_step_means": per_step.sum().item(), "tokens": int(batch.mask.sum())}


def demo_teacher_forcing(model: Seq2Seq, batch) -> dict[str, object]:
    """One batch's loss fed the true previous word (on) or the model's own guess (off), and
    what the decoder is fed at the second step in column 0."""
    model.eval()
    with torch.no_grad():
        objective = Objective(model)
        steps = batch.max_target_len
        forced, _ = objective(batch.inputs, batch.lengths, batch.targets, batch.mask,
                              [True] * steps)
        free, _ = objective(batch.inputs, batch.lengths, batch.targets, batch.mask,
                            [False] * steps)
        encoder_outputs, encoder_mask, hidden = model.encode(batch.inputs, batch.lengths)
        sos = torch.full_like(batch.targets[0], SOS)
        log_probs, _, _ = model.decode_step(sos, hidden, encoder_outputs, encoder_mask)
    return {"on": forced.item(), "off": free.item(), "true_words": batch.targets[0].tolist(),
            "own_guesses": log_probs.argmax(1).tolist()}


def demo_clipping(model: Seq2Seq, batch, clip: float = CLIP) -> dict[str, dict]:
    """Gradient norms of the encoder's and the decoder's parameters, clipped separately as in
    the notes: at the notes' limit, then at half the smaller norm (a limit that bites)."""
    model.eval()  # no dropout: both passes get the same gradients
    found: dict[str, dict] = {}
    limit = clip
    for name in ("notes", "small"):
        model.zero_grad()
        loss, _ = Objective(model)(batch.inputs, batch.lengths, batch.targets, batch.mask,
                                   [True] * batch.max_target_len)
        loss.backward()
        groups = (model.encoder_parameters(), model.decoder_parameters())
        before = [nn.utils.clip_grad_norm_(g, limit).item() for g in groups]
        after = [torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in g
                                                       if p.grad is not None])).item()
                 for g in groups]
        found[name] = {"limit": limit, "before": before, "after": after}
        limit = round(min(before) / 2, 4)
    model.zero_grad()
    return found


def train_iterations(model: Seq2Seq, batch, iterations: int = ITERATIONS,
                     print_every: int = PRINT_EVERY) -> list[tuple[int, float]]:
    """The notes' trainIters and train(): two Adam optimizers (decoder at 5x the rate),
    zero_grad, the masked loss with teacher forcing, backward, clip each side, step."""
    encoder_optimizer = torch.optim.Adam(model.encoder_parameters(), lr=LEARNING_RATE)
    decoder_optimizer = torch.optim.Adam(model.decoder_parameters(),
                                         lr=LEARNING_RATE * DECODER_LEARNING_RATIO)
    objective = Objective(model)
    printed = []
    print_loss = 0.0
    model.train()  # dropout on while training
    for iteration in range(1, iterations + 1):
        encoder_optimizer.zero_grad()
        decoder_optimizer.zero_grad()
        use_teacher_forcing = random.random() < TEACHER_FORCING_RATIO
        loss, _ = objective(batch.inputs, batch.lengths, batch.targets, batch.mask,
                            [use_teacher_forcing] * batch.max_target_len)
        loss.backward()
        nn.utils.clip_grad_norm_(model.encoder_parameters(), CLIP)
        nn.utils.clip_grad_norm_(model.decoder_parameters(), CLIP)
        encoder_optimizer.step()
        decoder_optimizer.step()
        print_loss += loss.item()
        if iteration % print_every == 0:
            average = print_loss / print_every
            printed.append((iteration, average))
            print(f"   Iteration: {iteration}; Percent complete: "
                  f"{iteration / iterations * 100:.1f}%; Average loss: {average:.4f}")
            print_loss = 0.0
    return printed


def greedy_by_hand(model: Seq2Seq, vocab: Vocab, sentence: str,
                   max_length: int = MAX_LENGTH) -> dict[str, object]:
    """The notes' GreedySearchDecoder, one word at a time: encode, start from SOS, take the
    most likely word and its softmax score, feed it back; stop at EOS (the fix)."""
    model.eval()
    ids = vocab.encode(sentence)[0] + [EOS]
    inputs = torch.tensor(ids, device=next(model.parameters()).device).unsqueeze(1)   # (T, 1)
    lengths = torch.tensor([len(ids)])
    steps = []
    with torch.no_grad():
        encoder_outputs, encoder_mask, hidden = model.encode(inputs, lengths)
        token = torch.tensor([SOS], device=inputs.device)
        for _ in range(max_length):
            log_probs, hidden, _ = model.decode_step(token, hidden, encoder_outputs,
                                                     encoder_mask)
            log_probs[0, [PAD, SOS, UNK]] = float("-inf")   # never say these (as torchtutor)
            score, token = torch.max(log_probs.exp(), dim=1)
            steps.append((vocab.index2word[int(token)], score.item()))
            if int(token) == EOS:
                break
        package_tokens, package_score = search.greedy(model, [ids], max_length)[0]
    return {"ids": ids, "steps": steps, "package_tokens": package_tokens,
            "package_score": package_score}


def demo_dropout_modes(model: Seq2Seq, batch) -> dict[str, bool]:
    """Train mode keeps dropout (two passes differ); eval mode turns it off (they agree)."""
    def loss_once() -> torch.Tensor:
        with torch.no_grad():
            return Objective(model)(batch.inputs, batch.lengths, batch.targets, batch.mask,
                                    [True] * batch.max_target_len)[0]
    model.train()
    train_equal = torch.equal(loss_once(), loss_once())
    model.eval()
    eval_equal = torch.equal(loss_once(), loss_once())
    return {"train_mode_repeats": train_equal, "eval_mode_repeats": eval_equal}


def save_and_reload(model: Seq2Seq, vocab: Vocab, folder: Path) -> Seq2Seq:
    """The notes' checkpoint (weights and the vocabulary's dict) and a model built from it."""
    path = save_checkpoint(folder / "checkpoint.pt", {"model": model.state_dict(),
                                                     "voc_dict": vocab.to_dict()})
    state = load_checkpoint(path)
    fresh = Seq2Seq(model.config).to(next(model.parameters()).device)
    fresh.load_state_dict(state["model"])
    return fresh.eval()


def run(device: torch.device, corpus: str = "chatterbot", max_lines: int = 20000) -> None:
    n = Narrator("Lesson 5: the chatbot tutorial", device)
    n.step("Load & Preprocess Data: a look at the original format", "The raw file, as "
           "printLines shows it. Cornell's movie_lines.txt holds lineID, characterID, movieID, "
           "character name and text, split by ' +++$+++ ', in iso-8859-1; ChatterBot's files "
           "are YAML lists of conversations.", real="torchtutor.chat.data.corpus")
    data = load_lesson_corpus(corpus, max_lines)
    n.show("file", data.raw_file)
    n.show("read", data.sliced)
    n.show("first lines", "\n".join(data.raw_lines[:8]))

    n.step("Create formatted data file", "loadLinesAndConversations and extractSentencePairs: "
           "consecutive lines of a conversation become (query, reply) pairs, written one pair a "
           "line, tab-separated. torchtutor escapes tabs and newlines inside a text, so every "
           "pair reads back.", real="torchtutor.chat.data.corpus (read_cornell, write_pairs_file)")
    lines, pairs_back = formatted_file_lines(data.corpus)
    n.show("pairs", len(data.corpus.pairs))
    n.show("sample lines from the file", "\n".join(repr(line) for line in lines))
    n.show("pairs read back from the file", pairs_back)

    n.step("Load and trim data: the Voc class", "A vocabulary maps words to indexes and "
           "counts them. Indexes 0, 1, 2 are PAD, SOS and EOS as in the notes; torchtutor adds "
           "UNK at 3 for words it does not know.", real="torchtutor.chat.data.vocab.Vocab")
    n.show("PAD_token, SOS_token, EOS_token, UNK", (PAD, SOS, EOS, UNK))

    n.step("unicodeToAscii and normalizeString", "Unicode to ASCII (accents dropped), "
           "lowercase, a space before each of . ! ?, every other non-letter becomes a space.",
           real="torchtutor.chat.data.text (unicode_to_ascii, normalize)")
    for raw, ascii_text, normalized in normalization_examples(data.corpus):
        n.show(repr(raw), f"{ascii_text!r} -> {normalized!r}")

    n.step("Filter pairs: MAX_LENGTH", f"Keep pairs whose sides both have fewer than "
           f"{MAX_LENGTH} words, then count the words of what is left.",
           real="torchtutor.chat.data.prepare.prepare_data")
    counts = filter_and_count(data.corpus)
    stats = data.prepared.stats
    n.show("Read sentence pairs", counts["read"])
    n.show("Trimmed to sentence pairs", counts["short"])
    n.show("Counted words", counts["counted"])
    n.show("prepare_data counted the same",
           (stats["pairs_read"], stats["pairs_length_filtered"], stats["words_counted"])
           == (counts["read"], counts["short"], counts["counted"]))

    n.step("Trim rare words: MIN_COUNT", f"Words seen fewer than {MIN_COUNT} times are "
           "dropped, and so is every pair holding one: a smaller vocabulary trains faster.",
           real="torchtutor.chat.data.vocab.Vocab.trim, chat.data.prepare (--min-count, --oov)")
    n.show("keep_words", f"{counts['kept_words']} / {counts['counted']} = "
           f"{counts['kept_words'] / counts['counted']:.4f}")
    n.show("Trimmed from pairs", f"{counts['short']} to {counts['kept_pairs']}, "
           f"{counts['kept_pairs'] / counts['short']:.4f} of total")
    n.show("prepare_data kept the same", (stats["words_kept"], stats["pairs_kept"])
           == (counts["kept_words"], counts["kept_pairs"]))
    vocab = data.prepared.vocab
    train_pairs = data.prepared.splits["train"]
    n.show("training pairs (split by conversation)", len(train_pairs))

    n.step("Prepare Data for Models: indexesFromSentence", "Each word becomes its index, and "
           "EOS ends the sentence.", real="torchtutor.chat.data.batches.index_pairs")
    example = train_pairs[0][0]
    n.show(repr(example), index_pairs([(example, example)], vocab)[0][0])

    n.step("zeroPadding, binaryMatrix, inputVar and outputVar: a batch of 5", "Sentences sorted "
           "longest first, padded with zeros (PAD) and transposed to (max_length, "
           "batch_size), so indexing the first dimension gives one time step of every "
           "sentence. The mask is 1 on real target tokens and 0 on padding.",
           real="torchtutor.chat.data.batches.make_batch")
    small = make_batch(index_pairs(pick_small_batch(train_pairs), vocab))
    n.show("input_variable (max_length, batch_size)", small.inputs)
    n.show("lengths", small.lengths)
    n.show("target_variable", small.targets)
    n.show("mask", small.mask.int())
    n.show("max_target_len", small.max_target_len)
    n.show("mask column sums", small.mask.sum(0))

    n.step("Encoder: pack_padded_sequence", "Packing keeps only the real tokens, one time "
           "step after another, with how many sentences are still running at each step; "
           "the GRU then never reads padding. Unpacking restores the padded batch.",
           real="torchtutor.chat.model.Seq2Seq.encode")
    packing = demo_packing(small.inputs, small.lengths)
    n.show("packed.data", packing["data"])
    n.show("packed.batch_sizes", packing["batch_sizes"])
    n.show("unpacked equals the padded input", torch.equal(packing["unpacked"], small.inputs))

    n.step("Encoder: bidirectional GRU, outputs summed", "Embed the indexes (one embedding "
           "shared with the decoder), pack, run the 2-layer bidirectional GRU, unpack, and sum "
           "the forward and backward outputs. The notes start the decoder from "
           "encoder_hidden[:decoder.n_layers], which for 2 layers is layer 0's forward and "
           "backward states; torchtutor gives each decoder layer its encoder layer's two "
           "directions summed.", real="torchtutor.chat.model.Seq2Seq.encode")
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(vocab_size=len(vocab), hidden_size=HIDDEN)).to(device)
    model.eval()  # dropout off while we look inside; training switches it back on
    small = small.to(device)
    encoded = demo_encoder(model, small.inputs, small.lengths)
    n.show("GRU outputs (max_length, batch, 2 x hidden)", tuple(encoded["both_directions"].shape))
    n.show("summed directions (max_length, batch, hidden)", tuple(encoded["summed"].shape))
    n.show("model.encode gives the same outputs",
           torch.allclose(encoded["summed"], encoded["encoder_outputs"], atol=1e-6))
    n.show("final hidden (layers x directions, batch, hidden)",
           tuple(encoded["final_hidden"].shape))

    n.step("Decoder: Luong attention layer (dot, general, concat)", "The decoder's GRU "
           "output at one step is scored against every encoder output: dot is h.h_s, general "
           "h.(W h_s), concat v.tanh(W [h; h_s]); a softmax over the positions gives the "
           "attention weights. The notes make concat's v with torch.FloatTensor(hidden_size), "
           "which is uninitialized memory; torchtutor draws it from U(-0.1, 0.1). The notes "
           "also let padding take weight; torchtutor masks it to exactly zero. Shown for the "
           "shortest sentence, whose last positions are padding.",
           real="torchtutor.chat.model.LuongAttention")
    attention = demo_attention(model, encoded["encoder_outputs"], encoded["encoder_mask"],
                               encoded["decoder_hidden"])
    last = small.inputs.size(1) - 1
    for method in ("dot", "general", "concat"):
        found = attention[method]
        n.show(f"{method} scores", found["scores"][last].detach().cpu().numpy().round(3))
        n.show(f"{method} weights, padding masked",
               found["weights"][last].detach().cpu().numpy().round(3))
        n.show(f"{method} weights as in the notes",
               found["weights_unmasked"][last].detach().cpu().numpy().round(3))
    n.show("padding weight with the mask", attention["dot"]["weights"][last,
                                                                       small.lengths[last]:]
           .sum().item())

    n.step("Decoder: one step of LuongAttnDecoderRNN", "Embed the current input word (SOS "
           "first), run the unidirectional GRU one step, attend, concatenate the context with "
           "the GRU output (Luong eq. 5), and predict the next word (eq. 6) with a softmax "
           "over the vocabulary. torchtutor returns log-probabilities (log_softmax), which "
           "the loss and the search use directly.",
           real="torchtutor.chat.model.Seq2Seq.decode_step")
    with torch.no_grad():
        sos = torch.full((small.size,), SOS, dtype=torch.long, device=device)
        log_probs, _, step_weights = model.decode_step(
            sos, encoded["decoder_hidden"], encoded["encoder_outputs"], encoded["encoder_mask"])
    probs = log_probs.exp()
    top = probs[0].topk(5)
    n.show("output (batch, vocabulary)", tuple(probs.shape))
    n.show("softmax row sums", probs.sum(1).cpu().numpy().round(5))
    n.show("top 5 words for sentence 1 (untrained)",
           ", ".join(f"{vocab.index2word[int(i)]} {p:.4f}" for p, i in zip(top.values.tolist(),
                                                                         top.indices.tolist(),
                                                                         strict=True)))

    n.step("Masked loss: maskNLLLoss", "The negative log-likelihood of the target words, "
           "averaged over the real tokens only (the mask). By hand as the notes do it, with "
           "torch's nll_loss, and with torchtutor's training objective: equal. The notes "
           "backpropagate the sum of each time step's mean instead, which weighs a late step "
           "holding one token like an early one holding many; torchtutor takes the mean over "
           "all real tokens (--tutorial-compat restores the notes' sum).",
           real="torchtutor.chat.train.objective.Objective")
    losses = masked_losses(model, small)
    n.show("by hand: -log(gather(softmax)).masked_select(mask).mean()", f"{losses['by_hand']:.6f}")
    n.show("F.nll_loss on the masked positions", f"{losses['library']:.6f}")
    n.show("torchtutor's Objective", f"{losses['objective']:.6f}")
    n.show("the notes' sum of per-step means", f"{losses['notes_sum_of_step_means']:.6f}")

    n.step("Single training iteration: teacher forcing", "With teacher forcing the decoder is "
           "fed the true previous word; without it, its own best guess. The untrained model's "
           "guesses are not the targets, so from the second step on the decoder sees other "
           "words and the loss changes. The notes draw one choice per batch (ratio 1.0 "
           "always forces).",
           real="torchtutor.chat.train.objective (--teacher-forcing RATIO)")
    forcing = demo_teacher_forcing(model, small)
    n.show("second step's inputs, teacher forcing on",
           " ".join(vocab.index2word[i] for i in forcing["true_words"]))
    n.show("second step's inputs, teacher forcing off",
           " ".join(vocab.index2word[i] for i in forcing["own_guesses"]))
    n.show("loss on / off", f"{forcing['on']:.4f} / {forcing['off']:.4f}")

    n.step("Single training iteration: gradient clipping", "clip_grad_norm_ scales the "
           "gradients down in place when their total norm exceeds the limit (the notes clip "
           "the encoder's and the decoder's separately at 50). Norms under the limit stay as "
           "they are; with a limit of half the smaller norm, both end at the limit.",
           real="torchtutor.chat.train.loop.train_step (--clip)")
    clipped = demo_clipping(model, small)
    for name in ("notes", "small"):
        c = clipped[name]
        n.show(f"clip {c['limit']}: encoder, decoder norm before",
               ", ".join(f"{v:.4f}" for v in c["before"]))
        n.show(f"clip {c['limit']}: after", ", ".join(f"{v:.4f}" for v in c["after"]))

    n.step("Training iterations", f"The notes' trainIters: {ITERATIONS} iterations on one "
           f"batch of {TRAIN_PAIRS} training pairs (the notes: 4000 on random batches of 64), "
           f"two Adam optimizers with the decoder's rate {DECODER_LEARNING_RATIO:g}x the "
           "encoder's, printing the average loss.",
           real="torchtutor chat train (chat/train/loop.py)")
    random.seed(0)
    torch.manual_seed(0)
    train_batch = make_batch(index_pairs(train_pairs[:TRAIN_PAIRS], vocab)).to(device)
    printed = train_iterations(model, train_batch)
    n.show("average loss, first and last print", f"{printed[0][1]:.4f} -> {printed[-1][1]:.4f}")

    n.step("Define Evaluation: greedy decoding", "GreedySearchDecoder: encode the input, start "
           "the decoder from SOS, and at every step take the most likely word and its softmax "
           "score, feeding the word back in. The notes run all MAX_LENGTH steps and keep the "
           "words after EOS; decoding stops at EOS here, as torchtutor's greedy search does "
           "(which gives the same words).", real="torchtutor.chat.infer.search.greedy")
    query = train_pairs[0][0]
    greedy = greedy_by_hand(model, vocab, query)
    n.show("input", repr(query))
    for number, (word, score) in enumerate(greedy["steps"], 1):
        n.show(f"step {number}", f"{word} ({score:.4f})")
    n.show("torchtutor's greedy reply, as chat.infer.display shows it",
           display_text(vocab.decode(greedy["package_tokens"])))

    n.step("Evaluate my text", "Input is normalized as in training. The notes stop with "
           "'Error: Encountered unknown word.' on a word outside the vocabulary; torchtutor "
           "reads it as UNK and says so.", real="torchtutor.chat.infer.chatbot.prepare_input, "
           "torchtutor chat talk / chat reply")
    prepared = prepare_input(vocab, f"{query} zyzzyva", MAX_LENGTH)
    n.show("words", prepared.words)
    n.show("ids", prepared.ids)
    n.show("unknown words", prepared.unknown_words)

    n.step("Run Model: dropout in train and eval modes", "Dropout is on in train mode (two "
           "passes differ) and off in eval mode (they agree), so set the mode before "
           "training and before chatting. A checkpoint holds the weights and the vocabulary; "
           "a model loaded from it replies the same.", real="torchtutor.chat.run_dir")
    modes = demo_dropout_modes(model, small)
    n.show("train mode: two passes agree", modes["train_mode_repeats"])
    n.show("eval mode: two passes agree", modes["eval_mode_repeats"])
    with tempfile.TemporaryDirectory() as folder:
        reloaded = save_and_reload(model, vocab, Path(folder))
    n.show("reloaded model's greedy reply is the same",
           search.greedy(reloaded, [greedy["ids"]], MAX_LENGTH)[0][0]
           == greedy["package_tokens"])


def main(config: LessonConfig) -> int:
    return run_lesson(sys.modules[__name__], config, corpus=config.corpus,
                      max_lines=config.max_lines)
