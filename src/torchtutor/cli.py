"""The `torchtutor` command line: the whole argparse tree, and nothing else.

Each subcommand turns its flags into a typed config and hands it to its module's `main(config)`;
no module below this one sees the flags. Modules are imported only when their command runs, so
`torchtutor --help` stays fast.
"""

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from torchtutor import __version__
from torchtutor.chat.config import DEFAULT, DEMO, RECIPES, TUTORIAL
from torchtutor.demo import DemoConfig
from torchtutor.runtime.config import (
    config_text,
    flatten,
    read_config_file,
    replace_nested,
    to_dict,
)
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.options import EXPORT_FORMATS, MAX_SEED
from torchtutor.vision.config import FAST as VISION
from torchtutor.vision.config import TUTORIAL as VISION_TUTORIAL


def _device(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    parser.add_argument("--device", default=default,
                        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps "
                             "(default: auto)")


def _handler(parser: argparse.ArgumentParser,
             command: Callable[[argparse.Namespace], int]) -> None:
    """What the command runs: a function below that imports its module (only then, so
    `--help` stays fast), turns the flags into the module's config and calls it."""
    parser.set_defaults(handler=command)


def _config_from_flags(args: argparse.Namespace, cls: type) -> Any:
    """A config dataclass built from the flags named like its fields."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                  if hasattr(args, f.name)})


def _config_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="a YAML or TOML config file, such as a run folder's config.yaml; "
                             "the options given on the command line override it "
                             "(default: the recipe alone)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML and exit (default: off)")


def _data_option(p: argparse.ArgumentParser, default: str | None, help: str) -> None:
    """Chat's corpus option, `--data` like vision's."""
    p.add_argument("--data", dest="corpus", default=default, metavar="CORPUS", help=help)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _seed(text: str) -> int:
    """A seed torch accepts (torch.manual_seed overflows past 64 bits)."""
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in 0..{MAX_SEED}, not {text}")
    return value


def _count_or_all(text: str) -> int:
    """A count of 0 or more; 'all' is 0 (no limit)."""
    if text.strip().lower() == "all":
        return 0
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, or 'all', not {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), not {text}")
    return value


# --- lessons -------------------------------------------------------------------------------

def _add_lessons(sub: argparse._SubParsersAction) -> None:
    lesson = sub.add_parser("lesson", help="the notes as narrated, runnable lessons",
                            description="Run one lesson of the notes on a chosen device, or "
                                        "write it as a Jupyter notebook.")
    lessons = lesson.add_subparsers(dest="lesson", metavar="LESSON", required=True)
    for name, text in [("tensors", "creation, indexing, view, item, NumPy bridge, devices"),
                       ("autograd", "requires_grad, grad_fn, backward, accumulation, no_grad"),
                       ("networks", "nn.Module, parameters, losses, the optimizer loop"),
                       ("classifier", "CIFAR-10: Dataset and DataLoader, the notes' net, "
                                      "training, testing, accuracy per class, devices"),
                       ("chatbot", "the chatbot tutorial: corpus, normalization, vocabulary, "
                                   "batches, encoder, attention, loss, training, greedy "
                                   "decoding")]:
        p = lessons.add_parser(name, help=text, description=text)
        _device(p)
        p.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
        p.add_argument("--notebook", default=None, metavar="FILE.ipynb",
                       help="write the lesson as a Jupyter notebook instead of running it "
                            "(needs the 'notebooks' extra; default: run it)")
        if name == "classifier":
            p.add_argument("--data", default=None, metavar="PATH",
                           help="a CIFAR-10 image tree (folder, tar/tar.gz, or a folder holding "
                                "one), the official archive or its folder, or 'cifar10' (the "
                                "cached download); default: a small generated set")
        if name == "chatbot":
            _data_option(p, "chatterbot",
                         help="a Cornell folder (original format), another corpus path, or "
                              "'chatterbot' (the bundled corpus; the default)")
            p.add_argument("--max-lines", type=int, default=20000, metavar="N",
                           help="read only the first N lines of a Cornell movie_lines.txt, "
                                "for speed (0: all; default: 20000)")
        _handler(p, _lesson)


def _export_options(p: argparse.ArgumentParser, out_metavar: str, out_help: str,
                    format_help: str) -> None:
    """--run, --out and --format of `chat export` and `vision export`."""
    p.add_argument("--run", required=True, metavar="RUN_DIR",
                   help="the run folder to export (required)")
    p.add_argument("--out", required=True, metavar=out_metavar, help=f"{out_help} (required)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="aoti", help=format_help)


# --- vision --------------------------------------------------------------------------------

def _add_vision(sub: argparse._SubParsersAction) -> None:
    vision = sub.add_parser("vision", help="CIFAR-10 / image-folder classifier",
                            description="Train, evaluate and use an image classifier.")
    cmds = vision.add_subparsers(dest="vision_command", metavar="COMMAND", required=True)

    p = cmds.add_parser("train", help="train a classifier",
                        description="Options left out keep the recipe's value "
                                    "(vision.config).")
    p.add_argument("--data", default=None,
                   help="'cifar10' (downloaded), a CIFAR-10 archive or folder, or an image "
                        f"folder tree (default: {VISION.data.source})")
    p.add_argument("--model", choices=["tutorial", "fast"], default=None,
                   help="the notes' net or the fast one (default: the recipe's; "
                        f"{VISION.model.name})")
    p.add_argument("--recipe", choices=["tutorial", "fast"], default=None,
                   help="training recipe (default: the one named like the model)")
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="run folder for config, logs and checkpoints (required)")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help=f"passes over the training images (default: {VISION.epochs}; "
                        f"tutorial: {VISION_TUTORIAL.epochs}; with --time-budget on the fast "
                        "recipe: planned from the budget)")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help=f"images per step (default: {VISION.batch_size}; tutorial: "
                        f"{VISION_TUTORIAL.batch_size})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate (default: {VISION.lr:g}; tutorial: "
                        f"{VISION_TUTORIAL.lr:g})")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop training cleanly after this many seconds, then evaluate; "
                        "the seconds count training and planning, while loading the data and "
                        "testing after each epoch come on top (default: none, train for "
                        "--epochs)")
    p.add_argument("--valid-fraction", type=_fraction, default=None,
                   help="for a single image folder without train/test: share held out "
                        f"(default: {VISION.data.valid_fraction})")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=None,
                   help="autocast (auto: bf16 on CUDA where supported, else fp16; on a "
                        "CPU with bf16 units bf16 for the fast model, else fp32) "
                        f"(default: {VISION.precision})")
    p.add_argument("--seed", type=int, default=None,
                   help=f"random seed (default: {VISION.seed})")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN_DIR's checkpoint; only the length, the budget, the "
                        "device and the precision may change (default: off, a new run)")
    _config_file(p)
    _device(p, default=None)
    _handler(p, _vision_train)

    p = cmds.add_parser("evaluate", help="overall and per-class accuracy, confusion matrix")
    p.add_argument("--run", required=True, metavar="RUN_DIR",
                   help="run folder written by `vision train` (required)")
    p.add_argument("--data", default=None, help="data to test on (default: the run's data)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (default: a table)")
    _device(p)
    _handler(p, _vision_evaluate)

    p = cmds.add_parser("predict", help="top-k classes for image files")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", metavar="RUN_DIR",
                        help="run folder written by `vision train` (required, or "
                             "--exported)")
    source.add_argument("--exported", metavar="FILE",
                        help="a file written by `vision export` instead of a run (CPU, "
                             "float32; load only files you trust: a .pt2 holds compiled code) "
                             "(default: use --run)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files to classify")
    p.add_argument("--top-k", type=_positive_int, default=3,
                   help="classes shown per image, likeliest first (default: %(default)s)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per image, in order (default: a text line each)")
    _device(p)
    _handler(p, _vision_predict)

    p = cmds.add_parser("export", help="the classifier as one file for plain torch")
    _export_options(p, "FILE", "the file to write (.pt2 for aoti, .onnx, .pt for torchscript)",
                    "aoti: torch.export + AOTInductor package (default); onnx: ONNX for "
                    "onnxruntime (pip install 'torchtutor[onnx]'); torchscript: one "
                    "TorchScript file (deprecated by PyTorch; for older deployments)")
    _handler(p, _vision_export)


# --- chat ----------------------------------------------------------------------------------

def _corpus_options(p: argparse.ArgumentParser) -> None:
    # Every default is None: an unset option keeps the recipe's value (chat.config), shown here.
    from torchtutor.chat.config import DEFAULT

    data = DEFAULT.data
    _data_option(p, None,
                 help="'chatterbot' (bundled), 'cornell' (downloaded and cached), or a PATH: "
                      "a Cornell folder (original or ConvoKit) or a tab-separated pairs file; "
                      "`chat train` also takes a folder `chat prepare` wrote, and trains on "
                      f"its splits, vocabulary and settings (default: {data.corpus})")
    p.add_argument("--max-length", type=_positive_int, default=None,
                   help="keep pairs whose sides have fewer words than this "
                        f"(default: {data.max_length})")
    p.add_argument("--min-count", type=int, default=None,
                   help=f"trim words seen fewer times (default: {data.min_count})")
    p.add_argument("--oov", choices=["drop", "unk"], default=None,
                   help="pairs with trimmed words: drop them (the notes) or map words to UNK "
                        f"(default: {data.oov})")
    p.add_argument("--valid-fraction", type=_fraction, default=None,
                   help=f"share of conversations held out for validation "
                        f"(default: {data.valid_fraction})")
    p.add_argument("--test-fraction", type=_fraction, default=None,
                   help=f"share of conversations held out for testing "
                        f"(default: {data.test_fraction})")
    p.add_argument("--seed", type=int, default=None,
                   help=f"seed of the split (and of training) (default: {data.seed})")


def _decoder_options(p: argparse.ArgumentParser) -> None:
    # Every default is None: unset options take the default decoder's values (chat.infer.options
    # BEST_DECODING for a run with a backward model, else plain greedy), shown in the help.
    from torchtutor.chat.infer.options import BEST_DECODING as best

    g = p.add_argument_group(
        "decoding", "Default: beam search's hypotheses plus sampled replies, reranked by "
        "mutual information with the input (--rerank mmi) when the run has a backward model, "
        "else greedy. Naming only --decoder gives that plain decoder.")
    g.add_argument("--decoder", choices=["greedy", "beam", "sample"], default=None,
                   help=f"how replies are searched (default: {best.method} + mmi, or greedy)")
    g.add_argument("--rerank", choices=["none", "mmi"], default=None,
                   help="rerank the decoder's hypotheses and --candidates sampled replies by "
                        "log p(r|q) + MMI_WEIGHT * log p(q|r) + LENGTH_BONUS * |r| "
                        "(default: mmi with a backward model, else none)")
    g.add_argument("--mmi-weight", type=float, default=None, metavar="LAMBDA",
                   help=f"weight of the backward model's log p(query|reply) "
                        f"(default: {best.mmi_weight})")
    g.add_argument("--length-bonus", type=float, default=None, metavar="GAMMA",
                   help=f"added to the MMI score per reply word (default: {best.length_bonus})")
    g.add_argument("--candidates", type=int, default=None, metavar="N",
                   help=f"sampled replies added to the candidates reranked "
                        f"(default: {best.candidates})")
    g.add_argument("--beam-size", type=int, default=None,
                   help=f"hypotheses beam search keeps (default: {best.beam_size} with mmi, "
                        "else 5)")
    g.add_argument("--length-penalty", type=float, default=None,
                   help="beam scores are divided by length**this, 0 turns it off "
                        "(default: 1.0)")
    g.add_argument("--n-best", type=int, default=None,
                   help="how many ranked replies to show (default: 1)")
    g.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature (default: 1.0)")
    g.add_argument("--top-k", type=int, default=None,
                   help="sample from the k likeliest words, 0: all (default: 0)")
    g.add_argument("--top-p", type=float, default=None,
                   help=f"nucleus sampling mass (default: {best.top_p} with mmi, else 1.0)")
    g.add_argument("--no-repeat-ngram", type=int, default=None,
                   help="never repeat an n-gram of this size in a reply, 0: off (default: 0)")
    g.add_argument("--no-repeat-token", action="store_true", default=None,
                   help="never the same word or punctuation twice in a row (default: off)")
    g.add_argument("--no-copy-ngram", type=int, default=None, metavar="N",
                   help="never copy an n-gram of your message into the reply, 0: off "
                        "(default: 0)")
    g.add_argument("--min-length", type=int, default=None, metavar="WORDS",
                   help="no reply shorter than this many words where the model can help it "
                        "(default: 0)")
    g.add_argument("--repetition-penalty", type=float, default=None,
                   help="a word already in the reply is this many times less likely to be "
                        "chosen again, 1: off (default: 1.0)")
    g.add_argument("--seed", type=int, default=None,
                   help="seed for sampling (default: 0 with mmi, else a fresh one each run)")


def _int8(p: argparse.ArgumentParser) -> None:
    p.add_argument("--int8", action="store_true",
                   help="CPU only: approximate int8 copies of the models, faster; a reply "
                        "can differ from the trained model's (default: off)")


def _add_chat(sub: argparse._SubParsersAction) -> None:
    chat = sub.add_parser("chat", help="the attention chatbot: prepare, train, talk, serve",
                          description="Seq2seq chatbot with Luong attention.")
    cmds = chat.add_subparsers(dest="chat_command", metavar="COMMAND", required=True)

    p = cmds.add_parser(
        "prepare", help="corpus -> pair file, vocabulary and splits",
        description="The notes' filters keep only short pairs of common words: at the defaults "
                    f"(--max-length {DEFAULT.data.max_length}, --min-count "
                    f"{DEFAULT.data.min_count}) ChatterBot keeps about a tenth of its 2,306 "
                    f"pairs; the demo uses --max-length {DEMO.data.max_length} --min-count "
                    f"{DEMO.data.min_count}. The table printed at the end says what was kept.")
    _corpus_options(p)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder to write into; `chat train --data DIR` trains on it "
                        "(required)")
    p.add_argument("--text-files", action=argparse.BooleanOptionalAction, default=True,
                   help="also write pairs.tsv and the split TSVs for people to read "
                        "(default: %(default)s; --no-text-files for big corpora)")
    _handler(p, _chat_prepare)

    p = cmds.add_parser("train", help="train a chatbot",
                        description="Options left out keep the recipe's value (chat.config).")
    _corpus_options(p)
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="run folder for config, metrics, checkpoints and the backward model "
                        "(required)")
    p.add_argument("--recipe", choices=list(RECIPES), default=None,
                   help="'default': the fastest found; 'tutorial': the notes' settings; "
                        "'demo': `torchtutor demo`'s (default: default)")
    p.add_argument("--tutorial-compat", action="store_true", default=None,
                   help="reproduce the tutorial's exact training semantics (implies "
                        "--recipe tutorial) (default: off, the fixed semantics)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_positive_int, default=None,
                        help=f"optimizer steps (default: {DEFAULT.steps}; tutorial: "
                             f"{TUTORIAL.steps})")
    length.add_argument("--epochs", type=float, default=None,
                        help="passes over the training pairs, instead of --steps "
                             "(default: none, --steps)")
    length.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="train for this many seconds, instead of --steps "
                             "(default: none, --steps)")
    m = DEFAULT.model
    p.add_argument("--hidden-size", type=_positive_int, default=None,
                   help=f"GRU and embedding width (default: {m.hidden_size}; demo: "
                        f"{DEMO.model.hidden_size})")
    p.add_argument("--encoder-layers", type=_positive_int, default=None,
                   help=f"bidirectional GRU layers of the encoder (default: {m.encoder_layers})")
    p.add_argument("--decoder-layers", type=_positive_int, default=None,
                   help=f"GRU layers of the decoder (default: {m.decoder_layers})")
    p.add_argument("--attention", choices=["dot", "general", "concat"], default=None,
                   help=f"Luong attention score (default: {m.attention})")
    p.add_argument("--dropout", type=float, default=None,
                   help=f"dropout between GRU layers and on embeddings (default: {m.dropout})")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help=f"pairs per step (default: {DEFAULT.batch_size}; tutorial: "
                        f"{TUTORIAL.batch_size})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"the encoder's Adam learning rate (default: {DEFAULT.lr:g})")
    p.add_argument("--decoder-lr-ratio", type=float, default=None,
                   help=f"the decoder's learning rate as a multiple of --lr (default: "
                        f"{DEFAULT.decoder_lr_ratio:g}; tutorial: "
                        f"{TUTORIAL.decoder_lr_ratio:g})")
    p.add_argument("--clip", type=float, default=None,
                   help=f"gradient norm clip (default: {DEFAULT.clip:g})")
    p.add_argument("--adam-beta2", type=float, default=None,
                   help=f"Adam's second-moment decay (default: {DEFAULT.adam_beta2}, the "
                        "notes')")
    p.add_argument("--unigram-bias", action=argparse.BooleanOptionalAction, default=None,
                   help="start the output bias at the training replies' log word "
                        f"frequencies (default: {'on' if DEFAULT.unigram_bias else 'off'}; "
                        f"tutorial: {'on' if TUTORIAL.unigram_bias else 'off'})")
    p.add_argument("--teacher-forcing", type=float, default=None, metavar="RATIO",
                   help="share of batches the decoder is fed the true previous word "
                        f"(default: {DEFAULT.teacher_forcing:g})")
    p.add_argument("--teacher-forcing-per-step", action="store_true", default=None,
                   help="decide teacher forcing at every step, not once per batch "
                        "(default: off)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                   help="bf16 autocast or float32; auto: bf16 where the hardware is fast at it "
                        f"(default: {DEFAULT.precision}; tutorial: {TUTORIAL.precision})")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="linear learning-rate warm-up over this many steps "
                        f"(default: {DEFAULT.warmup_steps})")
    p.add_argument("--schedule", choices=["constant", "cosine", "linear"], default=None,
                   help=f"learning-rate decay after the warm-up (default: {DEFAULT.schedule}; "
                        f"tutorial: {TUTORIAL.schedule})")
    p.add_argument("--bucket", action=argparse.BooleanOptionalAction, default=None,
                   help="batch pairs of similar length together (less padding) "
                        f"(default: {'on' if DEFAULT.bucket else 'off'})")
    p.add_argument("--eval-every", type=_positive_int, default=None, metavar="STEPS",
                   help="validation loss every this many steps (default: "
                        f"{DEFAULT.eval_every}; tutorial: {TUTORIAL.eval_every})")
    p.add_argument("--valid-pairs", type=_count_or_all, default=None, metavar="N",
                   help="validation pairs each evaluation scores: a sample drawn once by "
                        "seed and saved in the run folder; 0 or 'all': the whole valid split "
                        f"(default: {DEFAULT.valid_pairs})")
    p.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="STEPS",
                   help="save last.pt every this many steps (default: "
                        f"{DEFAULT.checkpoint_every}; tutorial: {TUTORIAL.checkpoint_every})")
    p.add_argument("--patience", type=_positive_int, default=None, metavar="N",
                   help="stop after N evaluations without a better validation loss "
                        "(default: train to the end)")
    p.add_argument("--keep-checkpoints", type=_positive_int, default=None, metavar="K",
                   help="keep the latest K saves: last.pt and K-1 last-STEP.pt (best.pt is "
                        f"a second name for one of them) (default: {DEFAULT.keep_checkpoints})")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN_DIR exactly; only the length, the device, the "
                        "evaluation and checkpoint cadence, --patience and "
                        "--keep-checkpoints may change (default: off, a new run)")
    p.add_argument("--direction", choices=["forward", "backward"], default=None,
                   help="forward: query -> reply (the chatbot); backward: reply -> query, "
                        "trained alone into RUN_DIR/backward on the same splits "
                        f"(default: {DEFAULT.direction})")
    p.add_argument("--backward", action=argparse.BooleanOptionalAction, default=None,
                   help="after the chatbot, train its backward model into RUN_DIR/backward "
                        "for MMI reranking (default: on for the default recipe, off for "
                        "the tutorial's)")
    _config_file(p)
    _device(p, default=None)
    _handler(p, _chat_train)

    p = cmds.add_parser("talk", help="chat in the terminal (q or quit ends it)")
    p.add_argument("--run", required=True, metavar="RUN_DIR",
                   help="run folder written by `chat train` (required)")
    _decoder_options(p)
    _device(p)
    _int8(p)
    _handler(p, _chat_talk)

    p = cmds.add_parser("reply", help="one reply per input (arguments or stdin lines)")
    p.add_argument("--run", required=True, metavar="RUN_DIR",
                   help="run folder written by `chat train` (required)")
    p.add_argument("text", nargs="*", metavar="TEXT",
                   help="messages to reply to, one reply each (default: lines from stdin)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line (default: the reply text)")
    _decoder_options(p)
    _device(p)
    _int8(p)
    _handler(p, _chat_reply)

    p = cmds.add_parser("evaluate", help="loss, perplexity, BLEU, distinct-n on held-out pairs")
    p.add_argument("--run", required=True, metavar="RUN_DIR",
                   help="run folder written by `chat train` (required)")
    p.add_argument("--split", choices=["train", "valid", "test"], default="test",
                   help="the run's held-out pairs to score; the demo holds none out, use "
                        "train there (default: %(default)s)")
    _data_option(p, None, help="evaluate on another corpus instead (default: the run's "
                               "--split)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (default: a table)")
    p.add_argument("--samples", type=int, default=5,
                   help="sample exchanges to show (default: %(default)s)")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="score N of the pairs, drawn by a fixed seed, for a quicker look "
                        "(default: all of them)")
    _decoder_options(p)
    _device(p)
    _int8(p)
    _handler(p, _chat_evaluate)

    p = cmds.add_parser("attention", help="attention heatmap of one reply")
    p.add_argument("--run", required=True, metavar="RUN_DIR",
                   help="run folder written by `chat train` (required)")
    p.add_argument("text", nargs="+", metavar="TEXT", help="the message to reply to")
    p.add_argument("--out", required=True, metavar="FILE.png",
                   help="the heatmap image to write (required)")
    _device(p)
    _handler(p, _chat_attention)

    p = cmds.add_parser("export", help="a self-contained chatbot for plain torch")
    _export_options(p, "PATH", "the folder to write (a file for --format torchscript)",
                    "aoti: torch.export + AOTInductor package and a standalone chatbot.py "
                    "(default); onnx: ONNX graphs for onnxruntime (pip install "
                    "'torchtutor[onnx]'); torchscript: one TorchScript file (deprecated "
                    "by PyTorch; for older deployments)")
    _handler(p, _chat_export)

    p = cmds.add_parser("serve", help="HTTP API and browser chat page")
    p.add_argument("--run", required=True, metavar="RUN_DIR",
                   help="run folder written by `chat train` (required)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 for every interface "
                        "(default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000,
                   help="TCP port, 0: any free one (default: %(default)s)")
    p.add_argument("--max-batch", type=_positive_int, default=64,
                   help="most requests decoded together (default: %(default)s)")
    p.add_argument("--batch-window-ms", type=float, default=5.0,
                   help="how long to gather requests into one batch, 0 to 1000 "
                        "(default 5; 0: no batching)")
    p.add_argument("--read-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="a request must arrive whole (headers and body) within this; slower "
                        "connections are closed (default 10)")
    p.add_argument("--max-connections", type=_positive_int, default=1000,
                   help="open connections held at most; beyond it the oldest one still "
                        "waiting for its request is closed, or new ones get 503 (default 1000)")
    p.add_argument("--queue-size", type=_positive_int, default=1024,
                   help="requests waiting beyond this get 503 (default: %(default)s)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads for decoding (default: cores - 1, leaving one "
                        "for the HTTP side)")
    p.add_argument("--allow-host", action="append", default=None, metavar="NAME",
                   help="also answer requests whose Host header names NAME ('*': any), as a "
                        "proxy or a DNS name in front of the server needs; repeatable "
                        "(default: --host's name, localhost and IP addresses only, which "
                        "stops DNS-rebinding pages)")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                   help="one line per request on stdout: client, request, status "
                        "(default: on)")
    _decoder_options(p)
    _device(p)
    _handler(p, _chat_serve)


# --- flags -> configs ----------------------------------------------------------------------
# Each option is named after the config field it sets: --hidden-size sets model.hidden_size,
# --max-length data.max_length, --seed every seed. A flag left out (None) keeps the recipe's
# value, so a recipe's values live in chat.config alone.

def flag_changes(args: argparse.Namespace, config: Any,
                 aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """The fields of `config` (dotted for nested configs) that the given flags set; `aliases`
    names the flags that are not named after their field."""
    changes = {}
    for key in flatten(to_dict(config)):
        name = (aliases or {}).get(key, key.rsplit(".", 1)[-1])
        value = getattr(args, name, None)
        if value is not None:
            changes[key] = value
    return changes


LENGTH = ("steps", "epochs", "time_budget")
# What `chat train --resume` may change; any other option must match the run's config.
CHAT_RESUMABLE = (*LENGTH, "device", "eval_every", "checkpoint_every", "patience",
                  "keep_checkpoints", "out")


def _given(args: argparse.Namespace, base: Any, aliases: dict[str, str] | None = None,
           lengths: tuple[str, ...] = ()) -> dict[str, Any]:
    """The options the user gave: a --config file's, then the flags' on top. A flag naming
    one of `lengths` replaces the file's whole length (--steps drops its time budget)."""
    changes = read_config_file(args.config) if args.config else {}
    flags = flag_changes(args, base, aliases)
    if any(flags.get(name) is not None for name in lengths):
        changes.update({name: None for name in lengths})
    changes.update(flags)
    return changes


def chat_train_config(args: argparse.Namespace):
    """`chat train`'s options as a TrainConfig: the recipe, then a --config file, then the
    flags given.

    --tutorial-compat implies --recipe tutorial. A length flag replaces the file's or the
    recipe's length (a time budget alone: the lr decay spans the budget).
    """
    from torchtutor.chat.train.run import stored_config

    changes = _given(args, DEFAULT, lengths=LENGTH)
    out = Path(args.out)
    if changes.get("direction", DEFAULT.direction) == "backward":   # into RUN_DIR/backward
        out = out / "backward"
    changes["out"] = str(out)
    if args.resume:
        stored = stored_config(out)
        _refuse_contradictions(stored, changes)
        return replace_nested(stored, {k: v for k, v in changes.items()
                                       if k in CHAT_RESUMABLE})
    name = "tutorial" if changes.get("tutorial_compat") else changes.get("recipe", "default")
    recipe = RECIPES[name] if name in RECIPES else DEFAULT   # a bad name: the config says so
    changes["recipe"] = name
    return replace_nested(recipe, changes)


def _refuse_contradictions(stored: Any, changes: dict[str, Any],
                           resumable: tuple[str, ...] = CHAT_RESUMABLE) -> None:
    values = flatten(to_dict(stored))
    for key, value in changes.items():
        if key not in resumable and values.get(key) != value:
            raise UserError(f"--resume continues {stored.out} as it was trained: "
                            f"{key.rsplit('.', 1)[-1].replace('_', '-')} is {values.get(key)!r} "
                            f"there, not {value!r} (drop the option, or train a new run)")


# `vision train --data` names the images, `--model` the net.
VISION_ALIASES = {"data.source": "data", "model.name": "model"}
VISION_RESUMABLE = (*LENGTH, "device", "precision", "out")


def vision_train_config(args: argparse.Namespace):
    """`vision train`'s options as a TrainConfig: the recipe (default: the one named like the
    model), then a --config file, then the flags given; with a time budget and no epochs the
    fast recipe fits its schedule to the budget."""
    from torchtutor.vision.config import RECIPES as VISION_RECIPES
    from torchtutor.vision.config import TrainConfig

    changes = _given(args, TrainConfig(), VISION_ALIASES)
    if args.resume:
        from torchtutor.vision.train import stored_config

        stored = stored_config(args.out)
        _refuse_contradictions(stored, changes, VISION_RESUMABLE)
        return replace_nested(stored, {k: v for k, v in changes.items()
                                       if k in VISION_RESUMABLE})
    name = changes.get("recipe") or changes.get("model.name") or TrainConfig.recipe
    changes["recipe"] = name
    if args.time_budget is not None:
        changes["plan_from_budget"] = name == "fast" and changes.get("epochs") is None
    recipe = VISION_RECIPES[name] if name in VISION_RECIPES else TrainConfig()
    return replace_nested(recipe, changes)


# The decoding flags are named after DecodeOptions' fields, but for --decoder (the method).
DECODING_ALIASES = {"method": "decoder"}


def decoding_given(args: argparse.Namespace) -> dict[str, Any]:
    """The DecodeOptions fields the decoding flags set (flags left out are None)."""
    from torchtutor.chat.infer.options import PLAIN_DECODING

    return flag_changes(args, PLAIN_DECODING, DECODING_ALIASES)


def _decoding(args: argparse.Namespace) -> Any:
    """--run's decoder: the default one for the run (chat.infer.options), with the flags given on
    top, checked (one-line errors)."""
    from torchtutor.chat.infer.options import resolve_options
    from torchtutor.chat.run_dir import has_backward

    return resolve_options(decoding_given(args), has_backward(args.run))


def _chat_talk(args: argparse.Namespace) -> int:
    from torchtutor.chat import talk

    return talk.main(talk.TalkConfig(run=args.run, device=args.device, int8=args.int8,
                                     options=_decoding(args)))


def _chat_reply(args: argparse.Namespace) -> int:
    from torchtutor.chat import reply

    return reply.main(reply.ReplyConfig(run=args.run, device=args.device, int8=args.int8,
                                        texts=list(args.text),
                                        as_json=args.json, options=_decoding(args)))


def _chat_evaluate(args: argparse.Namespace) -> int:
    from torchtutor.chat import evaluate

    return evaluate.main(evaluate.EvaluateConfig(
        run=args.run, split=args.split, corpus=args.corpus, as_json=args.json,
        samples=max(args.samples, 0), device=args.device, int8=args.int8,
        options=_decoding(args), limit=args.limit))


def _chat_serve(args: argparse.Namespace) -> int:
    from torchtutor.chat.serve import command as serve
    from torchtutor.chat.serve.connections import ServerLimits

    return serve.main(serve.ServeConfig(
        run=args.run, host=args.host, port=args.port, max_batch=args.max_batch,
        batch_window_ms=args.batch_window_ms, queue_size=args.queue_size, device=args.device,
        threads=args.threads, access_log=args.access_log, options=_decoding(args),
        allow_hosts=tuple(args.allow_host or ()),
        limits=ServerLimits(read_timeout_s=args.read_timeout,
                            max_connections=args.max_connections)))


def _lesson(args: argparse.Namespace) -> int:
    from torchtutor.lessons import autograd, chatbot, classifier, networks, tensors
    from torchtutor.lessons.runner import LessonConfig

    lessons = {"tensors": tensors, "autograd": autograd, "networks": networks,
               "classifier": classifier, "chatbot": chatbot}
    return lessons[args.lesson].main(_config_from_flags(args, LessonConfig))


def _vision_evaluate(args: argparse.Namespace) -> int:
    from torchtutor.vision import evaluate

    return evaluate.main(_config_from_flags(args, evaluate.EvaluateConfig))


def _vision_export(args: argparse.Namespace) -> int:
    from torchtutor.runtime.export import ExportConfig
    from torchtutor.vision import export

    return export.main(_config_from_flags(args, ExportConfig))


def _chat_attention(args: argparse.Namespace) -> int:
    from torchtutor.chat import attention_map

    return attention_map.main(_config_from_flags(args, attention_map.AttentionConfig))


def _chat_export(args: argparse.Namespace) -> int:
    from torchtutor.chat.export import command
    from torchtutor.runtime.export import ExportConfig

    return command.main(_config_from_flags(args, ExportConfig))


def _vision_predict(args: argparse.Namespace) -> int:
    from torchtutor.vision import predict

    return predict.main(predict.PredictConfig(
        run=args.run, images=list(args.images), top_k=args.top_k, device=args.device,
        exported=args.exported, as_json=args.json))


def _printed(args: argparse.Namespace, config: Any) -> bool:
    """--print-config: the resolved config printed instead of trained (no torch needed)."""
    if args.print_config:
        print(config_text(config), end="")
    return args.print_config


def _vision_train(args: argparse.Namespace) -> int:
    config = vision_train_config(args)
    if _printed(args, config):
        return 0
    from torchtutor.vision import train

    return train.main(config, resume=args.resume)


def _chat_train(args: argparse.Namespace) -> int:
    config = chat_train_config(args)
    if _printed(args, config):
        return 0
    from torchtutor.chat.train import command

    return command.main(config, resume=args.resume)


def _chat_prepare(args: argparse.Namespace) -> int:
    from torchtutor.chat.data import prepare

    config = replace_nested(DEFAULT.data, flag_changes(args, DEFAULT.data))
    return prepare.main(config, args.out, text_files=args.text_files)


def _demo(args: argparse.Namespace) -> int:
    from torchtutor import demo

    return demo.main(replace_nested(DemoConfig(), flag_changes(args, DemoConfig())))


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one line and a pointer to --help, not the
    whole usage text (26 lines for `chat train`) before the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="torchtutor",
        description="The PyTorch tutorial notes as working software.")
    parser.add_argument("--version", action="version", version=f"torchtutor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_lessons(sub)
    _add_vision(sub)
    _add_chat(sub)
    demo = sub.add_parser(
        "demo", help="the main job: train a chatbot on the bundled corpus, then chat",
        description="Trains `chat train --recipe demo` on ChatterBot: hidden size "
                    f"{DEMO.model.hidden_size}, max length {DEMO.data.max_length}, min count "
                    f"{DEMO.data.min_count}, nothing held out, {DEMO.steps} steps (and its "
                    "backward model), then chats in a terminal or answers a fixed list of "
                    "questions otherwise.")
    _device(demo, default=None)
    demo.add_argument("--out", default=None, metavar="RUN_DIR",
                      help=f"the demo's run folder (default: {DemoConfig.out})")
    demo.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                      help="most seconds of training, both models together "
                           f"(default: {DemoConfig.time_budget:g})")
    _handler(demo, _demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.handler(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except PermissionError as exc:  # e.g. a corpus or data folder the user may not read
        print(f"error: {exc.filename or 'a file'}: permission denied", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as exc:   # a path the system refuses (e.g. a name over 255 bytes)
        name = str(exc.filename or "a file")
        name = name if len(name) <= 80 else f"{name[:40]}...{name[-30:]}"
        print(f"error: {name}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
