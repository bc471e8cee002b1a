"""`torchtutor chat export`: a chatbot that runs with nothing but torch installed.

`--format aoti` (the default) writes a folder: the encoder and a decoder step compiled by
AOTInductor, and a standalone `chatbot.py` (chat/export_package.py); `--format onnx` the same
graphs as ONNX for onnxruntime (chat/export/onnx.py). This module also keeps the deprecated
`--format torchscript`: one TorchScript file holding everything, described below.

The file holds the whole greedy chatbot: text normalization (the notes' normalizeString,
redone with a character table so it runs inside TorchScript), the vocabulary as a list and a
dict, the trained network and the greedy loop. A plain program uses it like this:

    import torch
    bot = torch.jit.load("chatbot.pt")
    print(bot.reply("Hello there!"))          # -> a string

The network's `encode` and `decode_step` are traced (batch 1; tracing keeps the time
dimension free, which the export test checks on inputs of every length), and the loop around
them is scripted, so the artifact's greedy replies equal `chat.infer.search.greedy`'s.
"""

import functools
import io
import json
import os
import sys
import unicodedata
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from torchtutor.chat.data.text import unicode_to_ascii
from torchtutor.chat.data.vocab import EOS, PAD, SOS, UNK
from torchtutor.chat.infer.chatbot import Chatbot
from torchtutor.chat.infer.display import PUNCTUATION
from torchtutor.runtime.export import ExportConfig
from torchtutor.runtime.files import atomic_write_bytes, output_file
from torchtutor.runtime.progress import waiting

ASCII_KEPT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.!?"


@functools.lru_cache(maxsize=1)
def character_table() -> dict[str, str]:
    """What each character becomes in the notes' normalizeString, for every character that
    does not simply turn into a word break.

    normalizeString lowercases, decomposes (NFD) and drops combining marks, then keeps only
    ASCII letters and `.!?`. So a character maps to the kept part of unicode_to_ascii(lower(c)):
    'É' -> 'e', a combining accent -> '' (it vanishes, joining its neighbours), and anything
    absent from the table (digits, emoji, control characters...) is a word break.
    """
    table: dict[str, str] = {}
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue   # surrogates are not characters
        char = chr(code)
        if code < 128:
            if char in ASCII_KEPT:
                table[char] = char.lower()
            continue
        if unicodedata.category(char) == "Mn":
            table[char] = ""
            continue
        folded = unicode_to_ascii(char.lower())
        if any(c in ASCII_KEPT for c in folded):
            # Characters of `folded` outside ASCII_KEPT still break words; keep them as ' '.
            table[char] = "".join(c if c in ASCII_KEPT else " " for c in folded)
    return table


class ExportedChatbot(nn.Module):
    """Greedy chatbot in TorchScript: str in, str out. Mirrors chat.infer.search's greedy search."""

    def __init__(self, network: torch.jit.ScriptModule, words: list[str], chars: dict[str, str],
                 max_length: int, has_unk: bool):
        super().__init__()
        self.network = network
        self.words = words                       # index -> word, specials included
        self.word2index = {w: i for i, w in enumerate(words) if i >= (4 if has_unk else 3)}
        self.chars = chars
        self.max_length = max_length
        self.has_unk = has_unk

    @torch.jit.export
    def fold(self, text: str) -> str:
        """Each character replaced by its table entry (a word break if absent): ASCII only.

        TorchScript iterates a str byte by byte (UTF-8), so multi-byte characters are put back
        together from their lead byte's length before the lookup.
        """
        pieces: list[str] = []     # joined once at the end: += on a str copies it each time
        pending = ""
        need = 0
        for byte in text:
            code = ord(byte)
            if need > 0:
                pending += byte
                need -= 1
                if need == 0:
                    pieces.append(self.chars.get(pending, " "))
            elif code < 0x80:
                pieces.append(self.chars.get(byte, " "))
            else:
                pending = byte
                need = 1 if code < 0xE0 else (2 if code < 0xF0 else 3)
        return "".join(pieces)

    @torch.jit.export
    def normalize(self, text: str) -> str:
        """The notes' normalizeString (lower, strip accents, split off .!?, drop the rest)."""
        words: list[str] = []
        current = ""
        for c in self.fold(text):
            if c == "." or c == "!" or c == "?":
                if current != "":
                    words.append(current)
                current = c          # punctuation starts a word (as r" \1" does)
            elif c == " ":
                if current != "":
                    words.append(current)
                current = ""
            else:
                current += c
        if current != "":
            words.append(current)
        return " ".join(words)

    @torch.jit.export
    def encode_text(self, text: str) -> tuple[list[int], list[str], bool]:
        """Ids with EOS (empty if no usable word), unknown words, and whether it was cut."""
        ids: list[int] = []
        unknown: list[str] = []
        normalized = self.normalize(text)
        if normalized != "":
            for word in normalized.split(" "):
                index = self.word2index.get(word, -1)
                if index < 0:
                    unknown.append(word)
                    if self.has_unk:
                        ids.append(3)
                else:
                    ids.append(index)
        keep = max(self.max_length - 1, 1)
        truncated = len(ids) > keep
        ids = ids[:keep]
        if len(ids) > 0:
            ids.append(2)
        return ids, unknown, truncated

    @torch.jit.export
    def reply_with_score(self, text: str) -> tuple[str, float, list[str], bool, bool]:
        """(reply, log-probability, unknown words, truncated, empty)."""
        ids, unknown, truncated = self.encode_text(text)
        if len(ids) == 0:
            return "", 0.0, unknown, truncated, True
        inputs = torch.tensor(ids, dtype=torch.long).unsqueeze(1)
        lengths = torch.tensor([len(ids)], dtype=torch.long)
        encoder_outputs, encoder_mask, hidden = self.network.encode(inputs, lengths)
        token = torch.tensor([1], dtype=torch.long)
        score = 0.0
        out = ""
        for _ in range(self.max_length):
            log_probs, hidden, _attention = self.network.decode_step(token, hidden,
                                                                     encoder_outputs,
                                                                     encoder_mask)
            row = log_probs[0].clone()
            row[0] = float("-inf")              # PAD, SOS (and UNK) are never shown
            row[1] = float("-inf")
            if self.has_unk:
                row[3] = float("-inf")
            best = int(row.argmax())
            score += float(row[best])
            if best == 2:
                break
            word = self.words[best]
            if out != "" and word != "." and word != "!" and word != "?":
                out += " "
            out += word
            token = torch.tensor([best], dtype=torch.long)
        return out, score, unknown, truncated, False

    @torch.jit.export
    def reply(self, text: str) -> str:
        return self.reply_with_score(text)[0]

    def forward(self, text: str) -> str:
        return self.reply(text)


def _trace_network(model: nn.Module) -> torch.jit.ScriptModule:
    example = torch.tensor([[4], [5], [EOS]], dtype=torch.long)
    lengths = torch.tensor([3])
    with torch.no_grad():
        outputs, mask, hidden = model.encode(example, lengths)
    with warnings.catch_warnings():
        # The tracer warns about Python-side checks on lengths; they hold for every batch-1
        # input, and the export test compares replies for inputs of every length.
        warnings.simplefilter("ignore")
        return torch.jit.trace_module(model, {
            "encode": (example, lengths),
            "decode_step": (torch.tensor([SOS]), hidden, outputs, mask)})


def export_chatbot(bot: Chatbot) -> torch.jit.ScriptModule:
    """The TorchScript module for a Chatbot (its model must be on the CPU)."""
    model = bot.model.eval()
    assert PAD == 0 and SOS == 1 and EOS == 2 and UNK == 3 and PUNCTUATION == (".", "!", "?")
    network = _trace_network(model)
    wrapper = ExportedChatbot(network, list(bot.vocab.index2word), dict(character_table()),
                              int(bot.max_length), bool(bot.vocab.has_unk))
    with warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated; it is still the one format that holds the
        # text handling and the loop, and loads with nothing but torch (see the module doc).
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(wrapper)


def save_exported(module: torch.jit.ScriptModule, path: str | os.PathLike,
                  metadata: dict) -> Path:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, buffer, _extra_files={"torchtutor.json": json.dumps(metadata)})
    return atomic_write_bytes(path, buffer.getvalue())


def is_previous_export(path: Path) -> bool:
    """Whether `path` is a file `chat export` wrote (a TorchScript zip with our metadata)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("extra/torchtutor.json") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _export_torchscript(bot: Chatbot, config: ExportConfig) -> int:
    module = export_chatbot(bot)
    metadata = {"format": "torchtutor-chatbot-torchscript", "version": 1,
                "max_length": bot.max_length, "vocab_size": len(bot.vocab),
                "decoder": "greedy", "source_run": str(Path(config.run).resolve())}
    path = save_exported(module, config.out, metadata)
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({size:.1f} MiB; TorchScript is deprecated in torch, prefer "
          f"--format aoti). Use it with only torch installed:")
    print(f"  python -c \"import torch; bot = torch.jit.load('{path}'); "
          f"print(bot.reply('hello there'))\"")
    return 0


def _export_folder(bot: Chatbot, config: ExportConfig) -> int:
    from torchtutor.chat.export import package
    from torchtutor.runtime.progress import progress, refreshed

    bar = progress(total=4, desc="export", unit="stage")

    def stage(what: str) -> None:
        bar.set_description(what)
        bar.update(1)

    def fill(folder: Path) -> dict:
        if config.format == "aoti":
            name = package.PACKAGE
            package.compile_aoti(bot.model, folder / name, stage)
        else:
            from torchtutor.chat.export.onnx import export_onnx

            name = package.ONNX_FOLDER
            export_onnx(bot.model, folder / name, stage)
        settings = package.settings_for(bot, config.format, name,
                                        str(Path(config.run).resolve()))
        stage("checking the compiled graphs against torch")
        package.check_folder(bot, folder, settings)
        return settings

    try:
        with refreshed(bar):   # a stage (the compilation) can take minutes
            folder = package.write_folder(config.out, fill)
    finally:
        bar.close()
    print(f"wrote {folder}/ ({package.PROGRAM}, {package.SETTINGS} and the "
          f"{'AOTInductor package' if config.format == 'aoti' else 'ONNX graphs'}). "
          f"It needs only {'torch' if config.format == 'aoti' else 'torch and onnxruntime'}:")
    print(f"  {sys.executable} {folder}/{package.PROGRAM} 'hello there'")
    return 0


def main(config: ExportConfig) -> int:
    # Before the slow part: a folder, or an unrelated file in the way, is a one-line error.
    if config.format == "torchscript":
        output_file(config.out, replaceable=is_previous_export)
    else:
        from torchtutor.chat.export.package import check_out

        check_out(config.out)
    with waiting(f"loading {config.run}"):
        bot = Chatbot.load(config.run, "cpu")
    if config.format == "torchscript":
        return _export_torchscript(bot, config)
    return _export_folder(bot, config)
