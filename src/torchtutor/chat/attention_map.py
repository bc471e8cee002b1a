"""`torchtutor chat attention`: where the decoder looked while it wrote a (greedy) reply.

One row per reply word, one column per input word; a cell is the attention weight the
decoder gave that input position at that step (each row sums to 1).
"""

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torchtutor.chat.data.vocab import EOS
from torchtutor.chat.infer.decode import greedy_search, prepare_input
from torchtutor.chat.infer.display import display_text
from torchtutor.runtime.device import resolve_device
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write_bytes, output_file


@dataclass
class AttentionMap:
    input_words: list[str]     # the encoder's tokens, EOS included
    output_words: list[str]    # the reply's tokens, EOS included when it came
    weights: torch.Tensor      # (len(output_words), len(input_words))


def attention_map(bot: Any, text: str) -> AttentionMap:
    """Greedy reply to `text` with the attention weights of every step."""
    prepared = prepare_input(bot.vocab, text, bot.max_length)
    if prepared.empty:
        raise UserError("no words I know in that text, so there is no attention to show")
    with torch.inference_mode():
        tokens, _, weights = greedy_search(bot.model, [prepared.ids], bot.max_length,
                                           has_unk=bot.vocab.has_unk, keep_attention=True)
    unknown = set(prepared.unknown_words) if bot.vocab.has_unk else set()
    inputs = [f"{w} (unk)" if w in unknown else w for w in prepared.words] + ["EOS"]
    outputs = bot.vocab.decode(tokens[0]) + (["EOS"] if tokens[0][-1:] == [EOS] else [])
    return AttentionMap(input_words=inputs, output_words=outputs, weights=weights[0])


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
    from torchtutor.chat.run_dir import load_trained

    text = " ".join(config.text)
    output_file(config.out, replaceable=_is_png)   # a folder or an unrelated file: refused
    bot = load_trained(config.run, resolve_device(config.device), with_backward=False)
    amap = attention_map(bot, text)
    path = plot_attention(amap, config.out)
    reply = display_text([w for w in amap.output_words if w != "EOS"])
    print(f"> {text}\nBot: {reply}")
    print(f"wrote {path}")
    return 0
