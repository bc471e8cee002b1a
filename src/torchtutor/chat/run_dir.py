"""The run folder that `chat train` writes and every later command reads.

RUN_DIR/
  config.yaml   the whole resolved TrainConfig (chat.config): `chat train --config
                RUN_DIR/config.yaml --out NEW` trains the same run again
  config.json   the same as {"model": ModelConfig, "train": the rest, "data": the prepared
                data's PrepareConfig}, which the later commands read
  vocab.json    the vocabulary (chat.data.vocab)
  metrics.csv   one row per logged step (train loss, tokens/s) or evaluation (valid loss, ppl)
  events.out.tfevents.*  the same curves for TensorBoard (`tensorboard --logdir RUN_DIR`)
  loss.png      the loss curves
  last.pt       the latest checkpoint: model, both optimizers, schedulers, step, RNG states,
                data position, the resolved config; what --resume continues from
  last-STEP.pt  older saves, with --keep-checkpoints K > 1 (the K - 1 latest)
  best.pt       the save at the lowest validation loss so far (a hard link to one of the
                above where it is the same save, so not a second copy)
  valid-sample.npy  the valid split's pairs every validation of the run scores (their
                indices, drawn once by seed: --valid-pairs); absent when it scores them all
  backward/     the backward model (reply -> query), a run folder of the same shape, trained
                on the same splits turned around; the default decoder reranks with it
"""

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from torchtutor.chat.config import MAX_LENGTH, ModelConfig, TrainConfig
from torchtutor.chat.data.vocab import Vocab
from torchtutor.chat.model import Seq2Seq
from torchtutor.runtime.checkpoint import load_checkpoint, load_state_dict_checked
from torchtutor.runtime.config import to_dict
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write_text

CONFIG = "config.json"
VOCAB = "vocab.json"
METRICS = "metrics.csv"
LOSS_PLOT = "loss.png"
LAST = "last.pt"
BEST = "best.pt"
VALID_SAMPLE = "valid-sample.npy"
BACKWARD = "backward"   # a run folder of its own: the reply -> query model (chat.infer.rerank)


@dataclass
class TrainedChatbot:
    model: Seq2Seq          # in eval mode, on the device asked for
    vocab: Vocab
    config: dict            # config.json as read
    max_length: int         # the data's max_length: replies and inputs stay below it
    backward: Seq2Seq | None = None   # RUN_DIR/backward's model, when the run has one


def write_config(run_dir: str | os.PathLike, config: TrainConfig) -> None:
    """config.json: the run's resolved config, its model and data as sections of their own."""
    values = to_dict(config)
    sections = {"model": values.pop("model"), "train": values, "data": values.pop("data")}
    atomic_write_text(Path(run_dir) / CONFIG, json.dumps(sections, indent=2) + "\n")


def read_config(run_dir: str | os.PathLike) -> dict:
    """config.json of a run folder, checked for its three sections; UserError otherwise."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir} is a file; --run names a run folder")
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist; train one with "
                        "`torchtutor chat train --out DIR`")
    path = run_dir / CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir} is not a chat run folder (no {CONFIG})")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(config, dict) or not all(
            isinstance(config.get(key), dict) for key in ("model", "train", "data")):
        if isinstance(config, dict) and isinstance(config.get("data"), dict) \
                and "source" in config["data"]:   # vision's config names its images' source
            raise UserError(f"{run_dir} is a vision run (from `vision train`), not a chat run; "
                            "use `torchtutor vision evaluate/predict --run` with it")
        raise UserError(f"{path} is not a chat run config (needs model, train and data)")
    return config


def model_config_from(config: dict, source: str | os.PathLike = CONFIG) -> ModelConfig:
    known = {f.name for f in fields(ModelConfig)}
    try:
        return ModelConfig(**{k: v for k, v in config["model"].items() if k in known})
    except (TypeError, ValueError) as exc:
        raise UserError(f"{source}: bad model config ({exc})") from None


def load_trained(run_dir: str | os.PathLike, device: torch.device,
                 which: str = "best", with_backward: bool = True) -> TrainedChatbot:
    """The trained model (eval mode, on `device`) and its vocabulary.

    `which` is "best" or "last"; a run that never evaluated has no best.pt, and then the last
    checkpoint is used. `with_backward`: also load RUN_DIR/backward when there is one (the
    reranking decoders need it; export and the attention plot do not).
    """
    if which not in ("best", "last"):
        raise UserError(f"checkpoint must be 'best' or 'last', not {which!r}")
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    vocab = Vocab.load(run_dir / VOCAB)
    path = run_dir / (BEST if which == "best" else LAST)
    if which == "best" and not path.exists():
        path = run_dir / LAST
    state = load_checkpoint(path, map_location="cpu", required_keys=("model", "step"),
                            types={"model": dict, "step": int})
    # The checkpoint's own resolved config built its weights; older ones have config.json's.
    saved = state.get("config")
    from_checkpoint = isinstance(saved, dict) and isinstance(saved.get("model"), dict)
    model_config = model_config_from(saved if from_checkpoint else config,
                                     path if from_checkpoint else run_dir / CONFIG)
    if model_config.vocab_size != len(vocab):
        raise UserError(f"{run_dir}: the model has {model_config.vocab_size} outputs but "
                        f"{VOCAB} holds {len(vocab)} tokens")
    model = Seq2Seq(model_config)
    load_state_dict_checked(model, state["model"], path)
    try:
        max_length = int(config["data"]["max_length"])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise UserError(f"{run_dir / CONFIG}: data.max_length missing") from None
    if not 2 <= max_length <= MAX_LENGTH:   # -1 broke decoding; 10**9 never ended it
        raise UserError(f"{run_dir / CONFIG}: data.max_length is {max_length}, not in "
                        f"2..{MAX_LENGTH}")
    return TrainedChatbot(model=model.to(device).eval(), vocab=vocab, config=config,
                          max_length=max_length,
                          backward=_backward_model(run_dir, vocab, device, which)
                          if with_backward else None)


def has_backward(run_dir: str | os.PathLike) -> bool:
    folder = Path(run_dir) / BACKWARD
    return (folder / CONFIG).is_file() and any((folder / name).is_file()
                                                for name in (BEST, LAST))


def _backward_model(run_dir: Path, vocab: Vocab, device: torch.device,
                    which: str) -> Seq2Seq | None:
    if run_dir.name == BACKWARD or not has_backward(run_dir):
        return None
    backward = load_trained(run_dir / BACKWARD, device, which)
    if backward.vocab.index2word != vocab.index2word:
        raise UserError(f"{run_dir / BACKWARD} has another vocabulary than {run_dir}; "
                        "train it again with `chat train --direction backward`")
    return backward.model
