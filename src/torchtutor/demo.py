"""`torchtutor demo` (`make demo`), the main job: train a chatbot on the bundled ChatterBot
corpus in a few minutes on the CPU, then talk to it.

In a terminal it opens `chat talk`; otherwise (CI, a pipe) it prints its replies to a fixed
list of questions. A finished demo run in the output folder is reused, an interrupted one is
resumed, so running it twice does not train twice.

The demo trains chat.config's `DEMO` recipe (why its values differ from the notes' is said
there), with half the time budget for the chatbot and half for its backward model.
"""

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from torchtutor.runtime.config import positive, to_dict
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write_text

if TYPE_CHECKING:   # the chatbot imports torch; `torchtutor --help` should not
    from torchtutor.chat.infer.chatbot import Chatbot

# Questions the corpus answers in short sentences (its long answers are filtered out).
QUESTIONS = ["Hello!", "How are you?", "What's up?", "Who are you?", "Are you a robot?",
             "Where are you?", "Can you breathe?", "What is your favorite hobby?"]
MARKER = "demo.json"   # written when training finished; its presence means "reuse me"

DEFAULT_TIME_BUDGET = 300.0   # seconds; a slow machine stops here with what it has learned


@dataclass
class DemoConfig:
    out: str = "runs/demo"
    device: str = "auto"
    time_budget: float = DEFAULT_TIME_BUDGET   # seconds of training, both models together

    def __post_init__(self) -> None:
        positive("time_budget", self.time_budget)


def is_complete(out: Path) -> bool:
    """A demo run whose training finished (the marker is written last)."""
    try:
        return json.loads((out / MARKER).read_text(encoding="utf-8")).get("complete") is True
    except (OSError, ValueError, AttributeError):
        return False


def train_demo(config: DemoConfig) -> None:
    """Train (or finish training) the demo run in `config.out`: the chatbot, then its backward
    model (reply -> query) for the default decoder's MMI reranking, each with half the budget."""
    from torchtutor.chat.config import DEMO
    from torchtutor.chat.run_dir import LAST
    from torchtutor.chat.train.loop import train
    from torchtutor.chat.train.run import backward_config

    out = Path(config.out)
    budget = config.time_budget
    forward = replace(DEMO, out=str(out), time_budget=budget / 2, device=config.device)
    print(("Resuming" if (out / LAST).exists() else "Training") + " a chatbot on the bundled "
          f"ChatterBot corpus, then its backward model (at most {budget / 60:.1f} minutes of "
          f"training; {DEMO.steps} steps each).", flush=True)
    results = []
    for train_config in (forward, backward_config(forward)):
        resume = (Path(train_config.out) / LAST).exists()
        try:
            results.append(train(train_config, resume=resume))
        except UserError as exc:
            if resume:
                raise UserError(f"{exc} (delete {out} to train the demo afresh)") from None
            raise
    seconds = sum(r.train_seconds for r in results)
    atomic_write_text(out / MARKER, json.dumps({
        "complete": True, "steps": [r.steps for r in results], "train_seconds": round(seconds, 1),
        "config": to_dict(forward)}, indent=2))
    steps = [r.steps for r in results]
    print(f"Trained {' + '.join(map(str, steps))} step{'' if sum(steps) == 1 else 's'} in "
          f"{seconds:.0f} s; "
          f"run folder {out}.", flush=True)


def answer_questions(bot: "Chatbot", questions: list[str] = QUESTIONS) -> None:
    from torchtutor.chat.talk import format_reply, ranking

    options = bot.default_options
    for question, reply in zip(questions, bot.reply_batch(questions, options), strict=True):
        print(f"> {question}")
        for line in format_reply(reply, bot.vocab.has_unk, ranking(options)):
            print(line)


def run_demo(config: DemoConfig, interactive: bool) -> None:
    from torchtutor.chat.infer.chatbot import Chatbot
    from torchtutor.chat.talk import talk_in_terminal

    out = Path(config.out)
    if is_complete(out):
        print(f"Using the demo chatbot already trained in {out} (delete it to retrain).")
    else:
        train_demo(config)
    bot = Chatbot.load(out, config.device)
    if interactive:
        talk_in_terminal(bot, bot.default_options)
    else:
        answer_questions(bot)


def main(config: DemoConfig) -> int:
    run_demo(config, interactive=sys.stdin.isatty() and sys.stdout.isatty())
    return 0

