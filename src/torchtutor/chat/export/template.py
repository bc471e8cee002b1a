"""A chatbot exported by `torchtutor chat export`: greedy replies with only torch installed.

This folder holds `chatbot.pt2` (the encoder and one decoder step, compiled ahead of time by
AOTInductor; or, from `--format onnx`, `onnx/` with the same graphs for onnxruntime),
`chatbot.json` (vocabulary and settings) and this file.

    python3 chatbot.py "Hello there!" "How are you?"   # one reply per argument
    printf 'hi\\nwhat is ai?\\n' | python3 chatbot.py     # one reply per input line

Run it with a Python that has torch (2.13; onnxruntime too for an ONNX folder), for example the
one torchtutor was installed into: `.venv/bin/python chatbot.py "Hello there!"`.

    import sys; sys.path.insert(0, "FOLDER")
    from chatbot import load
    bot = load()                      # this file's folder; load("FOLDER") for another
    print(bot.reply("Hello there!"))
    reply = bot.replies(["hi", "what is ai?"])[0]    # text, score, unknown_words, ...

The text handling below (normalization and display) is the torchtutor package's own code,
copied in when the folder was written, so replies equal `torchtutor chat reply --decoder greedy`.
"""

import json
import os
import sys
import zipfile

try:
    import torch
except ImportError:
    sys.exit(f"error: this chatbot needs torch, and {sys.executable} has none; run it with the "
             "Python torch is installed in (such as torchtutor's .venv/bin/python)")

from torchtutor.chat.data.text import normalize, tokenize  # export: inline

# The export replaces each line marked "inline" with the source it imports.
from torchtutor.chat.infer.display import display_text  # export: inline
from torchtutor.runtime.exported import aoti_graph, onnx_graph  # export: inline

PAD, SOS, EOS, UNK = 0, 1, 2, 3
HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 64   # inputs decoded together


class ChatbotError(Exception):
    """A folder that cannot be loaded, said in one line."""


class Chatbot:
    """The exported network and its vocabulary; `replies` decodes greedily to EOS."""

    def __init__(self, folder: str = HERE):
        settings_path = os.path.join(folder, "chatbot.json")
        try:
            with open(settings_path, encoding="utf-8") as f:
                settings = json.load(f)
            self.words = [str(w) for w in settings["words"]]
            self.has_unk = bool(settings["has_unk"])
            self.max_length = int(settings["max_length"])
            package = os.path.join(folder, str(settings["package"]))
            self.backend = settings["format"]
        except FileNotFoundError:
            raise ChatbotError(f"{folder} holds no chatbot.json: not a folder that "
                               "`torchtutor chat export` wrote") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ChatbotError(f"{settings_path} is damaged ({type(exc).__name__}); export "
                               "the chatbot again") from None
        if not 2 <= self.max_length <= 1000 or len(self.words) < 4:
            raise ChatbotError(f"{settings_path} is damaged (max_length or words out of range)")
        special = 4 if self.has_unk else 3
        self.index = {w: i for i, w in enumerate(self.words) if i >= special}
        if not os.path.exists(package):
            raise ChatbotError(f"{package} is missing; export the chatbot again")
        if self.backend == "aoti" and not zipfile.is_zipfile(package):   # before torch logs
            raise ChatbotError(f"{package} is not a whole .pt2 archive (truncated?); export "
                               "the chatbot again")
        try:
            if self.backend == "aoti":
                self.encoder = aoti_graph(package, "encoder")
                self.decoder = aoti_graph(package, "decoder")
            elif self.backend == "onnx":
                self.encoder = onnx_graph(os.path.join(package, "encoder.onnx"))
                self.decoder = onnx_graph(os.path.join(package, "decoder.onnx"))
            else:
                raise ChatbotError(f"{settings_path} names an unknown format "
                                   f"{str(self.backend)[:40]!r}")
        except ImportError as exc:
            raise ChatbotError(f"this folder needs {exc.name or 'a module'}, which "
                               f"{sys.executable} lacks") from None
        except (OSError, RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ChatbotError(f"{package} cannot be loaded ({type(exc).__name__}: truncated "
                               "or damaged?); export the chatbot again") from None
        self.never = torch.zeros(len(self.words))
        self.never[[PAD, SOS, UNK] if self.has_unk else [PAD, SOS]] = float("-inf")

    def prepare(self, text: str) -> tuple[list[int], list[str], bool]:
        """Ids with EOS ([] when no word is usable), unknown words, and whether it was cut."""
        text = str(text).encode("utf-8", "replace").decode("utf-8")
        ids: list[int] = []
        unknown: list[str] = []
        for word in tokenize(normalize(text)):
            index = self.index.get(word)
            if index is None:
                unknown.append(word)
                if self.has_unk:
                    ids.append(UNK)
            else:
                ids.append(index)
        keep = max(self.max_length - 1, 1)
        truncated = len(ids) > keep
        ids = ids[:keep]
        return (ids + [EOS] if ids else []), unknown, truncated

    def _greedy(self, id_lists: list[list[int]]) -> list[tuple[list[int], float]]:
        width = max(len(ids) for ids in id_lists)
        inputs = torch.tensor([ids + [PAD] * (width - len(ids)) for ids in id_lists]).t()
        lengths = torch.tensor([len(ids) for ids in id_lists])
        outputs, mask, hidden = self.encoder(inputs.contiguous(), lengths)
        tokens = torch.full((len(id_lists),), SOS, dtype=torch.long)
        done = torch.zeros(len(id_lists), dtype=torch.bool)
        chosen, picked = [], []
        for _ in range(self.max_length):
            log_probs, hidden = self.decoder(tokens, hidden, outputs, mask)
            log_probs = log_probs + self.never
            best = log_probs.max(dim=-1)
            chosen.append(best.indices)
            picked.append(best.values)
            done |= best.indices == EOS
            if bool(done.all()):
                break
            tokens = best.indices
        table = torch.stack(chosen, dim=1).tolist()
        scores = torch.stack(picked, dim=1).double().tolist()
        found = []
        for row, values in zip(table, scores, strict=True):
            end = row.index(EOS) + 1 if EOS in row else len(row)
            found.append((row[:end], sum(values[:end])))
        return found

    def replies(self, texts: list[str]) -> list[dict]:
        """One dict per text: reply, score (log-probability, EOS included), unknown_words,
        truncated, empty."""
        prepared = [self.prepare(t) for t in texts]
        out = [{"reply": "", "score": 0.0, "unknown_words": unknown, "truncated": truncated,
                "empty": not ids} for ids, unknown, truncated in prepared]
        live = [i for i, (ids, _, _) in enumerate(prepared) if ids]
        with torch.inference_mode():
            for start in range(0, len(live), BATCH):
                chunk = live[start:start + BATCH]
                found = self._greedy([prepared[i][0] for i in chunk])
                for i, (ids, score) in zip(chunk, found, strict=True):
                    words = [self.words[t] for t in ids if t not in (PAD, SOS, EOS)]
                    out[i]["reply"] = display_text(words)
                    out[i]["score"] = score
        return out

    def reply(self, text: str) -> str:
        return self.replies([text])[0]["reply"]


def load(folder: str = HERE) -> Chatbot:
    return Chatbot(folder)


USAGE = """usage: chatbot.py [TEXT ...]
Replies to each TEXT, or to each line of standard input when there is none."""


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    try:
        bot = load()
    except ChatbotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if argv:
        for reply in bot.replies(argv):
            print(reply["reply"])
        return 0
    stdin = open(sys.stdin.fileno(), encoding="utf-8", errors="replace", newline="\n",
                 closefd=False)
    lines: list[str] = []
    interactive = sys.stdin.isatty()
    for line in stdin:
        lines.append(line.rstrip("\r\n"))
        if interactive or len(lines) >= BATCH:
            for reply in bot.replies(lines):
                print(reply["reply"], flush=True)
            lines = []
    for reply in bot.replies(lines) if lines else []:
        print(reply["reply"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
