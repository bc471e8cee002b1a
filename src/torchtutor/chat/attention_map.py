"""`torchtutor chat attention`: where the decoder looked while it wrote a (greedy) reply.

One row per reply word, one column per input word; a cell is the attention weight the
decoder gave that input position at that step (each row sums to 1).
"""

import io
from dataclasses import dataclass
from pathlib import Path

import torch

from torchtutor.chat.data.vocab import EOS, SOS
from torchtutor.chat.infer import search
from torchtutor.chat.infer.chatbot import Chatbot, prepare_input
from torchtutor.chat.infer.display import display_text
from torchtutor.chat.model import Seq2Seq
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write_bytes, output_file


@dataclass
class AttentionMap:
    input_words: list[str]     # the encoder's tokens, EOS included
    output_words: list[str]    # the reply's tokens, EOS included when it came
    weights: torch.Tensor      # (len(output_words), len(input_words))


def attention_map(bot: Chatbot, text: str) -> AttentionMap:
    """Greedy reply to `text` with the attention weights of every step."""
    prepared = prepare_input(bot.vocab, text, bot.max_length)
    if not prepared.ids:
        raise UserError("no words I know in that text, so there is no attention to show")
    rules = search.Rules(has_unk=bot.vocab.has_unk)
    tokens, _ = search.greedy(bot.model, [prepared.ids], bot.max_length, rules)[0]
    unknown = set(prepared.unknown_words) if bot.vocab.has_unk else set()
    inputs = [f"{w} (unk)" if w in unknown else w for w in prepared.words] + ["EOS"]
    outputs = bot.vocab.decode(tokens) + (["EOS"] if tokens[-1:] == [EOS] else [])
    return AttentionMap(input_words=inputs, output_words=outputs,
                        weights=attention_weights(bot.model, prepared.ids, tokens))


@torch.inference_mode()
def attention_weights(model: Seq2Seq, ids: list[int], reply: list[int]) -> torch.Tensor:
    """(reply steps, input positions): the decoder's attention while it wrote `reply`,
    replayed step by step from the same inputs, so the same weights as during the search."""
    outputs, mask, hidden = search.encode(model, [ids])
    rows = []
    for token in [SOS] + reply[:-1]:
        _, hidden, weights = model.decode_step(torch.tensor([token]), hidden, outputs, mask)
        rows.append(weights[0])
    return torch.stack(rows).float().cpu()


def plot_attention(amap: AttentionMap, path: str | Path) -> Path:
    """Heatmap PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = amap.weights.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * cols + 2), max(3.0, 0.45 * rows + 1.5)))
    image = ax.imshow(amap.weights.numpy(), cmap="viridis", vmin=0.0, vmax=1.0,
                      aspect="auto")
    ax.set_xticks(range(cols), amap.input_words, rotation=45, ha="right")
    ax.set_yticks(range(rows), amap.output_words)
    ax.set_xlabel("input")
    ax.set_ylabel("reply")
    fig.colorbar(image, ax=ax, label="attention weight")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


@dataclass
class AttentionConfig:
    run: str
    text: list[str]     # the input, word by word as given
    out: str
    device: str = "auto"


def _is_png(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False


def main(config: AttentionConfig) -> int:
    text = " ".join(config.text)
    output_file(config.out, replaceable=_is_png)   # a folder or an unrelated file: refused
    bot = Chatbot.load(config.run, config.device)
    amap = attention_map(bot, text)
    path = plot_attention(amap, config.out)
    reply = display_text([w for w in amap.output_words if w != "EOS"])
    print(f"> {text}\nBot: {reply}")
    print(f"wrote {path}")
    return 0
