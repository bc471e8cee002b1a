"""The chatbot's network: a bidirectional GRU encoder and a GRU decoder with Luong attention.

Read top to bottom: the attention, then `Seq2Seq` with its three jobs (encode the query,
decode one step, decode a whole target under teacher forcing); its config, `ModelConfig`,
lives in chat.config with the other settings.

Shapes are time-major like the notes: (time, batch, ...). Both decoder paths use the same
weights and give the same numbers; the whole-sequence path exists because one GRU call over
the full target and one batched attention are much faster than a Python loop of single steps.

`tutorial_compat=True` reproduces the tutorial's behaviour where it differs from the default:
attention also looks at padded encoder positions, and the decoder starts from the first
`decoder_layers` slices of the encoder's final hidden state (`encoder_hidden[:n_layers]`, which
for 2 layers is layer 0 forward and layer 0 backward) instead of each layer's two directions
summed.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from torchtutor.chat.config import ModelConfig  # re-exported: the model's config
from torchtutor.chat.data.vocab import SOS
from torchtutor.runtime.device import check_memory


def decoder_layer_sources(encoder_layers: int, decoder_layers: int) -> list[int]:
    """Which encoder layer seeds each decoder layer (default mode).

    Equal counts map layer to layer. Otherwise the first and last layers are matched and the
    ones between spread evenly, so the decoder's top layer always starts from the encoder's top
    (most abstract) summary; a single decoder layer takes the encoder's top layer.
    """
    if decoder_layers == 1:
        return [encoder_layers - 1]
    return [round(i * (encoder_layers - 1) / (decoder_layers - 1)) for i in range(decoder_layers)]


class LuongAttention(nn.Module):
    """Luong et al. (2015) global attention: `dot`, `general` or `concat` scores, softmax over
    the encoder positions, and the weighted sum of encoder outputs (the context).

    Works for any number of queries at once: one decoder step (1, B, H) or a whole teacher-forced
    target (T_out, B, H); the scores come from one batched matrix product either way.
    """

    def __init__(self, method: str, hidden_size: int):
        super().__init__()
        self.method = method
        if method == "general":
            self.key_proj = nn.Linear(hidden_size, hidden_size)
        elif method == "concat":
            # W [query; key] = W_q query + W_k key: split so every (query, key) pair is a sum
            # of two projections instead of a projection of a concatenation per pair.
            self.query_proj = nn.Linear(hidden_size, hidden_size, bias=False)
            self.key_proj = nn.Linear(hidden_size, hidden_size)
            self.v = nn.Parameter(torch.empty(hidden_size).uniform_(-0.1, 0.1))

    def scores(self, queries: Tensor, keys: Tensor) -> Tensor:
        """(Tq, B, H) queries against (Tk, B, H) keys -> (B, Tq, Tk) scores."""
        q = queries.transpose(0, 1)                                  # (B, Tq, H)
        if self.method == "concat":
            k = self.key_proj(keys).transpose(0, 1)                  # (B, Tk, H)
            energy = torch.tanh(self.query_proj(q).unsqueeze(2) + k.unsqueeze(1))
            return energy.matmul(self.v)                             # (B, Tq, Tk)
        k = self.key_proj(keys) if self.method == "general" else keys
        return torch.bmm(q, k.permute(1, 2, 0))                      # (B, Tq, Tk)

    def forward(self, queries: Tensor, keys: Tensor, key_mask: Tensor | None,
                ) -> tuple[Tensor, Tensor]:
        """Return the contexts (Tq, B, H) and the weights (B, Tq, Tk).

        `key_mask` (Tk, B) is True on real encoder positions; masked positions get exactly
        zero weight (-inf before the softmax). None attends to every position, padding too.
        """
        scores = self.scores(queries, keys)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask.t().unsqueeze(1), float("-inf"))
        weights = F.softmax(scores, dim=-1)
        contexts = torch.bmm(weights, keys.transpose(0, 1))          # (B, Tq, H)
        return contexts.transpose(0, 1), weights


def parameter_count(config: ModelConfig) -> int:
    """Seq2Seq's number of weights for `config`, known before any is made (a little over
    for the attention's few, which depend on its method)."""
    h, v = config.hidden_size, config.vocab_size
    gru = 3 * h * (h + 2)                                # per layer: hidden weights, biases
    encoder = 2 * (3 * h * h + gru) + 2 * (config.encoder_layers - 1) * (6 * h * h + gru)
    decoder = config.decoder_layers * (3 * h * h + gru)
    return v * h + encoder + decoder + (2 * h * h + 2 * h) + (2 * h * h + h) + (h * v + v)


class Seq2Seq(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.vocab_size == 0:
            raise ValueError("ModelConfig.vocab_size is 0: set it from the vocabulary first")
        self.config = config
        hidden, vocab = config.hidden_size, config.vocab_size
        check_memory(4 * parameter_count(config), f"a model of hidden size {hidden} and "
                     f"{vocab} words (float32 weights)")
        # One embedding, used by the encoder and the decoder alike.
        self.embedding = nn.Embedding(vocab, hidden)
        # Encoder. GRU dropout acts between stacked layers only, so one layer gets none.
        self.encoder_gru = nn.GRU(hidden, hidden, config.encoder_layers, bidirectional=True,
                                  dropout=config.dropout if config.encoder_layers > 1 else 0.0)
        # Decoder.
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.decoder_gru = nn.GRU(hidden, hidden, config.decoder_layers,
                                  dropout=config.dropout if config.decoder_layers > 1 else 0.0)
        self.attention = LuongAttention(config.attention, hidden)
        self.concat = nn.Linear(2 * hidden, hidden)
        self.out = nn.Linear(hidden, vocab)
        self._layer_sources = decoder_layer_sources(config.encoder_layers,
                                                    config.decoder_layers)

    # -- parameter groups for the two optimizers ------------------------------------------------

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The embedding and the encoder GRU (the notes' encoder optimizer)."""
        return [*self.embedding.parameters(), *self.encoder_gru.parameters()]

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Everything after the encoder. Under tutorial_compat the shared embedding is listed
        here as well: the notes hand `decoder.parameters()`, which holds the embedding, to the
        decoder optimizer, so the embedding is stepped by both optimizers."""
        shared = list(self.embedding.parameters()) if self.config.tutorial_compat else []
        return [*shared, *self.decoder_gru.parameters(), *self.attention.parameters(),
                *self.concat.parameters(), *self.out.parameters()]

    # -- encoder --------------------------------------------------------------------------------

    def encode(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """inputs (T, B) padded ids, lengths (B,) -> encoder outputs (T, B, H), encoder mask
        (T, B) True on real tokens, decoder initial hidden (decoder_layers, B, H).

        Lengths need not be sorted: packing sorts and unsorts internally.
        """
        max_len, batch = inputs.shape
        lengths_cpu = lengths.to("cpu", torch.int64)  # packing requires lengths on the CPU
        if lengths_cpu.numel() != batch or int(lengths_cpu.min()) < 1 \
                or int(lengths_cpu.max()) > max_len:
            raise ValueError(f"lengths must be {batch} values in [1, {max_len}]")
        embedded = self.embedding(inputs)
        if int(lengths_cpu.min()) == max_len:
            # No padding (always so for one input): packing would only add work, and the
            # int8 GRU runs its packed path step by step (measured 1.0 vs 0.7 ms at batch 1).
            outputs, final = self.encoder_gru(embedded)
        else:
            packed = pack_padded_sequence(embedded, lengths_cpu, enforce_sorted=False)
            packed_outputs, final = self.encoder_gru(packed)
            outputs, _ = pad_packed_sequence(packed_outputs, total_length=max_len)
        hidden = self.config.hidden_size
        outputs = outputs[:, :, :hidden] + outputs[:, :, hidden:]   # sum the two directions
        positions = torch.arange(max_len, device=inputs.device).unsqueeze(1)
        mask = positions < lengths_cpu.to(inputs.device).unsqueeze(0)
        # `final` is (layers * 2, B, H), ordered layer 0 forward, layer 0 backward, layer 1 ...
        if self.config.tutorial_compat:
            decoder_hidden = final[:self.config.decoder_layers]
        else:
            per_layer = final.view(self.config.encoder_layers, 2, batch, hidden).sum(dim=1)
            decoder_hidden = per_layer[self._layer_sources]
        return outputs, mask, decoder_hidden.contiguous()

    # -- decoder --------------------------------------------------------------------------------

    def _attend_and_combine(self, rnn_output: Tensor, encoder_outputs: Tensor,
                            encoder_mask: Tensor) -> tuple[Tensor, Tensor]:
        """GRU outputs (Tq, B, H) -> tanh(concat([output; context])) (Tq, B, H), weights."""
        key_mask = None if self.config.tutorial_compat else encoder_mask
        contexts, weights = self.attention(rnn_output, encoder_outputs, key_mask)
        combined = torch.tanh(self.concat(torch.cat([rnn_output, contexts], dim=2)))
        return combined, weights

    def decode_step(self, tokens: Tensor, hidden: Tensor, encoder_outputs: Tensor,
                    encoder_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One decoder step: tokens (B,) -> log-probs (B, V), new hidden, attention (B, T)."""
        embedded = self.embedding(tokens.unsqueeze(0))                         # (1, B, H)
        if self.training:  # dropout is the identity in eval; skipping it saves a call a step
            embedded = self.embedding_dropout(embedded)
        rnn_output, hidden = self.decoder_gru(embedded, hidden)
        combined, weights = self._attend_and_combine(rnn_output, encoder_outputs, encoder_mask)
        # float32 before the softmax, so bf16 autocast never rounds the log-probabilities
        log_probs = F.log_softmax(self.out(combined.squeeze(0)).float(), dim=-1)
        return log_probs, hidden, weights.squeeze(1)

    def teacher_forced_features(self, targets: Tensor, hidden: Tensor, encoder_outputs: Tensor,
                                encoder_mask: Tensor) -> Tensor:
        """The whole target at once: (T, B) -> the (T, B, H) vectors fed to the output layer.

        The decoder's inputs are the targets shifted right behind SOS. Training projects only
        the real (non-pad) positions to the vocabulary, which saves the padded share of the
        largest matrix product.
        """
        sos = torch.full_like(targets[:1], SOS)
        inputs = torch.cat([sos, targets[:-1]], dim=0)
        embedded = self.embedding_dropout(self.embedding(inputs))               # (T, B, H)
        rnn_output, _ = self.decoder_gru(embedded, hidden)
        combined, _ = self._attend_and_combine(rnn_output, encoder_outputs, encoder_mask)
        return combined

    def decode_teacher_forced(self, targets: Tensor, hidden: Tensor, encoder_outputs: Tensor,
                              encoder_mask: Tensor) -> Tensor:
        """The whole target at once: (T, B) -> log-probs (T, B, V); one GRU call, one batched
        attention. Equal to T calls of `decode_step` fed the true previous tokens."""
        features = self.teacher_forced_features(targets, hidden, encoder_outputs, encoder_mask)
        return F.log_softmax(self.out(features).float(), dim=-1)
