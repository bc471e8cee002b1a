"""`torchtutor chat reply`: one reply per input, from arguments or from stdin lines.

Lines from a pipe or a file are decoded in batches (much faster than one at a time); lines
typed at a terminal are answered as they come. `--json` prints one object per line with
`input`, `reply` (as a person reads it), `tokens` (the model's words) and `score` (the reply's
log-probability; null for an input with no words).
"""

import io
import json
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

from torchtutor.chat.fast.int8 import load_chatbot
from torchtutor.chat.infer.chatbot import Chatbot, notices
from torchtutor.chat.infer.options import DEFAULT_BATCH, DecodeOptions
from torchtutor.runtime.errors import UserError


@dataclass
class ReplyConfig:
    """`chat reply`'s options (cli.py builds it from the flags); empty `texts`: stdin's lines."""
    run: str
    device: str
    int8: bool
    texts: list[str]
    as_json: bool
    options: DecodeOptions


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\r\n"))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def json_score(score: float) -> float | None:
    """A score JSON can hold: NaN and infinities (not JSON) become null."""
    return round(score, 4) if math.isfinite(score) else None


def reply_lines(bot: Chatbot, lines: Iterable[str], options: DecodeOptions, as_json: bool,
                out: TextIO, err: TextIO, batch_size: int = DEFAULT_BATCH) -> int:
    """Write one reply per input line to `out` (notices to `err`); return how many."""
    count = 0
    for chunk in _chunks(lines, batch_size):
        for text, reply in zip(chunk, bot.reply_batch(chunk, options), strict=True):
            if as_json:
                record = {"input": text, "reply": reply.text, "tokens": " ".join(reply.words),
                          "score": None if reply.empty else json_score(reply.score),
                          "unknown_words": reply.unknown_words, "truncated": reply.truncated,
                          "empty": reply.empty}
                if reply.alternatives:
                    record["alternatives"] = [{"reply": t, "score": json_score(s)}
                                              for t, s in reply.alternatives]
                print(json.dumps(record, allow_nan=False), file=out)
            else:
                print(reply.text, file=out)
                for note in notices(reply, bot.vocab.has_unk):
                    print(f"note: {text[:40]!r}: {note}", file=err)
            count += 1
        out.flush()
    return count


MAX_LINE = 100_000   # characters of one message: far past any sentence the model takes


def _stdin_lines() -> Iterator[str]:
    # Undecodable bytes become U+FFFD instead of an exception; lines end only at '\n'
    # so a stray '\r' inside a line stays part of it. Binary data (a line mostly of bytes
    # that are not UTF-8, or a line without end) stops at once rather than being replied to
    # for hours (50 MB of random bytes are 200,000 "lines") or read whole.
    stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace",
                              newline="\n")
    number = 0
    while line := stream.readline(MAX_LINE + 1):
        number += 1
        if len(line) > MAX_LINE and not line.endswith("\n"):
            raise UserError(f"stdin line {number} is longer than {MAX_LINE:,} characters; "
                            "give one message a line")
        undecodable = line.count("\ufffd")
        if undecodable >= 8 and 3 * undecodable > len(line):   # Latin-1 text: a few per line
            raise UserError(f"stdin line {number} is mostly bytes that are not UTF-8 text "
                            "(binary data?); give one message a line")
        yield line


def main(config: ReplyConfig) -> int:
    bot = load_chatbot(config.run, config.device, config.int8)
    if config.texts:
        lines: Iterable[str] = config.texts
        batch = DEFAULT_BATCH
    else:
        lines = _stdin_lines()
        batch = 1 if sys.stdin.isatty() else DEFAULT_BATCH   # answer typed lines at once
    reply_lines(bot, lines, config.options, config.as_json, sys.stdout, sys.stderr, batch)
    return 0
