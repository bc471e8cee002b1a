"""`torchtutor chat talk`: the notes' interactive loop, in the terminal.

Type a line, read the bot's reply; `q` or `quit` ends the session, and so do Ctrl-D and
Ctrl-C (cleanly, without a traceback). An empty line just gives a new prompt. In a terminal the
prompt has readline's line editing and history (arrow keys, Ctrl-R), kept between sessions in
the torchtutor cache. Nothing the user types can crash it: unknown words, emoji and control
characters only change what the bot says.
"""

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from torchtutor.chat.fast.int8 import load_chatbot
from torchtutor.chat.infer.chatbot import Chatbot, Reply, notices
from torchtutor.chat.infer.options import DecodeOptions

QUIT_WORDS = ("q", "quit")


@dataclass
class TalkConfig:
    """`chat talk`'s options (cli.py builds it from the flags)."""
    run: str
    device: str
    int8: bool
    options: DecodeOptions


def format_reply(reply: Reply, has_unk: bool, ranking: str | None = None) -> list[str]:
    """The lines the terminal shows for one reply: the reply, n-best alternatives, notices.

    Alternatives come in the decoder's order, which is by `ranking` (say "MMI score") when
    that is not the log-probability shown beside each; a header then says so, so that
    log-probabilities out of order do not look like a mistake."""
    if reply.empty:
        lines = ["Bot: ..."]
    else:  # a model may answer EOS at once; say so rather than print a blank reply
        lines = [f"Bot: {reply.text}" if reply.text else "Bot: (no reply)"]
    if reply.alternatives:
        order = f"best first by {ranking}" if ranking else "best first"
        lines.append(f"     other replies, {order} (log-prob of each in brackets; "
                     f"this one {reply.score:.2f}):")
    for rank, (text, score) in enumerate(reply.alternatives, start=2):
        lines.append(f"     {rank}. {text or '(no reply)'}  ({score:.2f})")
    lines.extend(f"     ({note})" for note in notices(reply, has_unk))
    return lines


def talk(bot: Chatbot, options: DecodeOptions, read: Callable[[str], str] = input,
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
        if not line.strip():
            continue   # an empty line: a new prompt, not a reply to nothing
        try:
            reply = bot.reply(line, options)
        except KeyboardInterrupt:
            print(file=out)
            break
        for text in format_reply(reply, bot.vocab.has_unk, ranking(options)):
            print(text, file=out, flush=True)
        replies += 1
    return replies


def ranking(options: DecodeOptions) -> str | None:
    """What orders the n-best list when it is not the log-probability itself."""
    if options.rerank == "mmi":
        return "MMI score (log-prob + weight x how well the reply predicts your message)"
    if options.method == "beam" and options.length_penalty:
        return "log-prob / length**length_penalty"
    return None


def history_file() -> Path:
    from torchtutor.runtime.download import cache_dir

    return cache_dir() / "talk_history"


def enable_line_editing() -> Callable[[], None]:
    """readline for `input()`: editing, arrow-key history and Ctrl-R search, with the history
    of earlier sessions. Returns the function that saves it (a no-op without readline)."""
    try:
        import readline
    except ImportError:   # Windows without pyreadline: plain input() still works
        return lambda: None
    path = history_file()
    try:
        readline.read_history_file(path)
    except OSError:
        pass   # the first session, or an unreadable file: start empty
    readline.set_history_length(1000)

    def save() -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)
        except OSError:
            pass   # a history that cannot be saved is no reason to fail on exit
    return save


def talk_in_terminal(bot: Chatbot, options: DecodeOptions) -> int:
    """`talk` for a person at a terminal: line editing and history, and how to stop."""
    save_history = enable_line_editing()
    print("Talk to the bot; 'q' or 'quit' (or Ctrl-D) ends it.")
    try:
        return talk(bot, options)
    finally:
        save_history()


def main(config: TalkConfig) -> int:
    bot = load_chatbot(config.run, config.device, config.int8)
    if sys.stdin.isatty():
        talk_in_terminal(bot, config.options)
    else:
        talk(bot, config.options)
    return 0
