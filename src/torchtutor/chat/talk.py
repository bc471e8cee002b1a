"""`torchtutor chat talk`: the notes' interactive loop, in the terminal.

Type a line, read the bot's reply; `q` or `quit` ends the session, and so do Ctrl-D and
Ctrl-C (cleanly, without a traceback). Nothing the user types can crash it: unknown words,
empty lines, emoji and control characters only change what the bot says.
"""

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from torchtutor.chat.decode import DecodeOptions, load_bot, notices, options_from_args, reply_batch
from torchtutor.chat.run_dir import has_backward

QUIT_WORDS = ("q", "quit")


@dataclass
class TalkConfig:
    run: str
    device: str
    int8: bool
    exact: bool
    options: DecodeOptions


def format_reply(reply: Any, has_unk: bool) -> list[str]:
    """The lines the terminal shows for one reply: the reply, n-best alternatives, notices."""
    if reply.empty:
        lines = ["Bot: ..."]
    else:  # a model may answer EOS at once; say so rather than print a blank reply
        lines = [f"Bot: {reply.text}" if reply.text else "Bot: (no reply)"]
    for rank, (text, score) in enumerate(reply.alternatives, start=2):
        lines.append(f"     {rank}. {text}  (log-prob {score:.2f})")
    lines.extend(f"     ({note})" for note in notices(reply, has_unk))
    return lines


def talk(bot: Any, options: DecodeOptions, read: Callable[[str], str] = input,
         out: TextIO | None = None) -> int:
    """Run the loop until `q`, `quit`, end of input or Ctrl-C; return how many replies it gave.

    `read` is `input` in the terminal; tests pass a function that feeds lines.
    """
    out = out or sys.stdout
    replies = 0
    while True:
        try:
            line = read("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=out)   # leave the shell prompt on a fresh line
            break
        if line.strip().lower() in QUIT_WORDS:
            break
        try:
            reply = reply_batch(bot, [line], options)[0]
        except KeyboardInterrupt:
            print(file=out)
            break
        for text in format_reply(reply, bot.vocab.has_unk):
            print(text, file=out, flush=True)
        replies += 1
    return replies


def main(args) -> int:
    config = TalkConfig(run=args.run, device=args.device, int8=args.int8, exact=args.exact,
                        options=options_from_args(args, has_backward(args.run)))
    bot = load_bot(config.run, config.device, config.int8, config.exact)
    if sys.stdin.isatty():
        print("Talk to the bot; 'q' or 'quit' (or Ctrl-D) ends it.")
    talk(bot, config.options)
    return 0
