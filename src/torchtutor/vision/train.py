"""`torchtutor vision train`: the notes' recipe and a fast recipe, with checkpoints and resume.

The loop reads top to bottom: build data and model, then for each epoch train on shuffled
batches, test, log a row to metrics.csv and save a checkpoint atomically. A checkpoint holds the
model, optimizer, step, every RNG and the data order, so `--resume` continues where it stopped.
"""

import copy
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from torchtutor.runtime import distributed as ddp
from torchtutor.runtime.checkpoint import (
    NonFiniteWeights,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)
from torchtutor.runtime.config import to_dict, write_config_file
from torchtutor.runtime.device import synchronize
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import (
    atomic_write_text,
    check_folder,
    make_folder,
    remove_stale_temps,
)
from torchtutor.runtime.precision import autocast, autocast_dtype
from torchtutor.runtime.progress import MetricsLog, plot_curves, progress, waiting
from torchtutor.runtime.seeding import rng_state, seed_everything, set_rng_state
from torchtutor.runtime.threads import ThreadPolicy, thread_policy
from torchtutor.vision.config import TrainConfig, config_from_saved
from torchtutor.vision.data import (
    DeviceBatches,
    ImageData,
    ImageDataset,
    channel_stats,
    load_data,
    normalize,
)
from torchtutor.vision.inference import (
    CHECKPOINT_NAME,
    CHECKPOINT_TYPES,
    checkpoint_path,
    predict_logits,
    uses_channels_last,
)
from torchtutor.vision.lookahead import Lookahead
from torchtutor.vision.models import build_model

LOSS_PLOT = "loss.png"   # the name a chat run folder uses for its loss curves
METRICS = ["epoch", "step", "lr", "train_loss", "train_accuracy", "test_accuracy",
           "train_seconds", "images_per_second"]
# The columns that are TensorBoard curves too, and their tags.
CURVES = {"train_loss": "loss/train", "train_accuracy": "accuracy/train",
          "test_accuracy": "accuracy/test", "lr": "lr", "images_per_second": "images_per_s"}

def lr_at(config: TrainConfig, progress_: float) -> float:
    """Learning rate at `progress_` (0 at the start, 1 at the end) of the run."""
    if config.schedule == "constant":
        return config.lr
    if progress_ < config.warmup:
        start = config.warmup_start
        return config.lr * (start + (1 - start) * progress_ / config.warmup)
    left = max(0.0, (1 - progress_) / max(1e-9, 1 - config.warmup))
    return config.lr * (config.final_lr + (1 - config.final_lr) * left)


def parameter_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict]:
    """SGD groups: batch-norm shifts at `bias_lr_scale` x the rate and without weight decay,
    the whitening bias on its own (its rate drops to 0 after `whiten_bias_epochs`), the rest.

    Each group's `scale` multiplies the scheduled rate.
    """
    norms, whiten, rest = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith("bias") and ".norm" in name:
            norms.append(p)
        elif name == "whiten.bias":
            whiten.append(p)
        else:
            rest.append(p)
    groups = [dict(params=rest, scale=1.0, name="weights"),
              dict(params=whiten, scale=1.0, name="whiten_bias"),
              dict(params=norms, scale=config.bias_lr_scale, name="norm_biases",
                   weight_decay=0.0 if config.bias_lr_scale != 1.0 else config.weight_decay)]
    return [g for g in groups if g["params"]]


class Trainer:
    """Holds one run's model, optimizer, data iterators and counters."""

    def __init__(self, config: TrainConfig, data: ImageData, device: torch.device,
                 ctx: ddp.DistContext | None = None):
        self.config, self.data, self.device = config, data, device
        self.ctx = ctx or ddp.DistContext(device=device)  # torchrun's rank and world size
        self.mean, self.std = channel_stats(data.train_images)
        self.model = build_model(config.model.name, len(data.classes), config.model.widths)
        if hasattr(self.model, "init_whitening"):
            sample = data.train_images[torch.randperm(len(data.train_images))[:5000]]
            self.model.init_whitening(normalize(sample, self.mean, self.std))
        self.channels_last = uses_channels_last(config.model.name, device)
        self.model.to(device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.ctx.enabled and device.type == "cuda":
            # Batch statistics over the global batch; SyncBatchNorm runs on CUDA only, so CPU
            # processes normalize with their own part's statistics.
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.net = ddp.wrap_model(self.model, self.ctx)  # DDP under torchrun; steps call it
        self.dtype = autocast_dtype(config.precision, device,
                                    cpu_auto_bf16=config.model.name == "fast", fp16=True)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels
        self.optimizer = torch.optim.SGD(parameter_groups(self.model, config), lr=config.lr,
                                         momentum=config.momentum, nesterov=config.nesterov,
                                         weight_decay=config.weight_decay)
        self.lookahead = Lookahead(self.model) if config.lookahead else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.generator = torch.Generator().manual_seed(config.seed)
        if config.recipe == "tutorial":
            # The notes' way: a Dataset and a DataLoader with shuffling, batch 4.
            dataset = ImageDataset(data.train_images, data.train_labels, self.mean, self.std)
            self.loader = DataLoader(dataset, batch_size=config.batch_size,
                                     sampler=ddp.random_sampler(dataset, self.generator, self.ctx))
        else:
            self.loader = DeviceBatches(
                data.train_images, data.train_labels, self.mean, self.std, config.batch_size,
                device, augment=config.augment, shuffle=True, drop_last=True,
                channels_last=self.channels_last, seed=config.seed, rank=self.ctx.rank,
                world_size=self.ctx.world_size)
            self.generator = self.loader.generator
        if len(self.loader) == 0:
            # An epoch with no batch would leave the loop spinning without a step.
            raise UserError(f"{len(data.train_labels)} training images are fewer than one "
                            f"global batch ({config.batch_size} per process x "
                            f"{self.ctx.world_size}); lower --batch-size")
        self.steps_per_epoch = len(self.loader)
        self.total_steps = max(1, round(config.epochs * self.steps_per_epoch))
        self.step = 0
        self.train_seconds = 0.0
        self.epoch_start_rng = self.generator.get_state()

    @property
    def by_clock(self) -> bool:
        return bool(self.config.plan_from_budget and self.config.time_budget)

    def progress(self, seconds: float = 0.0) -> float:
        """How far through the run: by steps, or by the clock when the budget planned it.

        Planning from a few timed steps is a guess on shared cores; following the clock
        decays the rate to zero exactly at the budget whether the machine slows down or
        speeds up later.
        """
        if self.by_clock:
            return seconds / self.config.time_budget
        return self.step / self.total_steps

    def steps_left(self) -> bool:
        return self.by_clock or self.step < self.total_steps

    def train_step(self, x: torch.Tensor, y: torch.Tensor, seconds: float = 0.0,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step; returns the loss and the number right as tensors on the device.

        Nothing here waits for the device: reading them is left to the caller, once an epoch,
        so a GPU never idles while Python catches up.
        """
        progress_ = self.progress(seconds)
        lr = lr_at(self.config, progress_)
        whiten_epochs = self.config.whiten_bias_epochs
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("scale", 1.0)
            if group.get("name") == "whiten_bias" and whiten_epochs is not None and \
                    self.step >= whiten_epochs * self.steps_per_epoch:
                group["lr"] = 0.0
        with autocast(self.device, self.dtype):
            logits = self.net(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.config.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        if self.lookahead is not None:
            self.lookahead.after_step(self.step, progress_)
        return loss.detach(), (logits.argmax(1) == y).sum()

    def batches(self, skip: int):
        """This epoch's batches on the device, skipping those a resumed epoch already did."""
        if isinstance(self.loader, DeviceBatches):
            yield from self.loader.epoch(skip)
            return
        for index, (x, y) in enumerate(self.loader):
            if index >= skip:
                yield x.to(self.device), y.to(self.device)

    def test_accuracy(self, tta: bool) -> float:
        """Test accuracy; under torchrun each rank tests its part and the counts are summed."""
        part = ddp.shard_bounds(len(self.data.test_labels), self.ctx)
        logits = predict_logits(self.model, self.data.test_images[part], self.mean, self.std,
                                self.device, self.dtype, tta=tta,
                                translate=tta and self.config.tta_translate,
                                channels_last=self.channels_last,
                                desc="test" if self.ctx.is_main else None)
        self.model.train()
        right = float((logits.argmax(1) == self.data.test_labels[part]).sum())
        return ddp.all_reduce_sum([right], self.ctx)[0] / len(self.data.test_labels)

    def _time_steps(self, it, count: int, warmup: int) -> float:
        """Median seconds per training step over `count` steps after `warmup` untimed ones."""
        timings = []
        threads = torch.get_num_threads()
        for i in progress(range(warmup + count), desc=f"planning: {threads} thread(s)",
                          unit="step", force=None if self.ctx.is_main else False):
            x, y = next(it)
            start = time.perf_counter()
            self.train_step(x, y)
            synchronize(self.device)
            if i >= warmup:
                timings.append(time.perf_counter() - start)
        return sorted(timings)[len(timings) // 2]

    def plan_steps(self, budget: float) -> None:
        """Fit the schedule to the budget: time a few steps on a throwaway copy of the model.

        On a CPU it also tries one thread against the default: on cores shared with other
        busy processes, two OpenMP threads that wait for each other were measured 4x slower
        than one thread (60 vs 450 images/s here), while on idle cores two are faster.
        """
        saved = (self.model, self.optimizer, self.step, self.generator.get_state(),
                 rng_state(), self.lookahead)
        net = self.net
        self.lookahead = None  # it holds the real model; the timed steps must not touch it
        self.model = copy.deepcopy(self.model)
        self.net = ddp.wrap_model(self.model, self.ctx)
        self.optimizer = torch.optim.SGD([p for p in self.model.parameters() if p.requires_grad],
                                         lr=0.0, momentum=self.config.momentum)
        it = (batch for _ in range(20) for batch in self.batches(0))  # enough even if tiny
        default = torch.get_num_threads()
        per_step = {default: self._time_steps(it, 3, 2)}
        if self.device.type == "cpu" and default > 1:
            torch.set_num_threads(1)
            per_step[1] = self._time_steps(it, 3, 1)
        threads = min(per_step, key=per_step.get)
        torch.set_num_threads(threads)
        self.model, self.optimizer, self.step = saved[0], saved[1], saved[2]
        self.net, self.lookahead = net, saved[5]
        self.generator.set_state(saved[3])
        set_rng_state(saved[4])
        # Only an estimate for the logs: the schedule then follows the clock (`progress`), and
        # the per-epoch `ThreadChooser` keeps re-checking the thread count.
        self.total_steps = max(1, int(0.95 * budget / per_step[threads]))
        self.total_steps = ddp.broadcast_object(self.total_steps, self.ctx)  # rank 0's plan
        # The resolved config records the planned length.
        self.config = replace(self.config,
                              epochs=round(self.total_steps / self.steps_per_epoch, 3))
        timed = ", ".join(f"{n} thread(s) {t * 1000:.0f} ms" for n, t in per_step.items())
        print(f"planned {self.total_steps} steps ({self.config.epochs} epochs) with {threads} "
              f"thread(s); per step: {timed}", file=sys.stderr)

    def state(self, epoch: int, skip: int, finished: bool) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "config": to_dict(self.config), "classes": self.data.classes,
                "mean": self.mean, "std": self.std, "epoch": epoch, "batch_in_epoch": skip,
                "step": self.step, "total_steps": self.total_steps,
                "world_size": self.ctx.world_size,
                "train_seconds": self.train_seconds, "finished": finished,
                "epoch_start_rng": self.epoch_start_rng,
                "lookahead": self.lookahead.state_dict() if self.lookahead else None,
                "generator": self.generator.get_state(), "rng": rng_state()}

    def restore(self, state: dict, path) -> tuple[int, int]:
        load_state_dict_checked(self.model, state["model"], path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            if self.lookahead is not None:
                self.lookahead.load_state_dict(state.get("lookahead") or {})
        except (ValueError, KeyError) as exc:  # e.g. a run saved by an older torchtutor
            raise UserError(f"cannot resume from {path}: its optimizer state does not fit "
                            f"this version's recipe ({str(exc)[:80]})") from None
        try:  # entries of the wrong type: a damaged file, said in one line
            return self._restore_position(state)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
            raise UserError(f"cannot resume from {path}: its position or random state is "
                            f"malformed ({type(exc).__name__}: {str(exc)[:80]})") from None

    def _restore_position(self, state: dict) -> tuple[int, int]:
        # Steps count global batches: resumed on another number of ranks (torchrun after one
        # process, or back), the same share of the run is done.
        scale = int(state.get("world_size", 1)) / self.ctx.world_size
        self.step = int(int(state["step"]) * scale)
        self.total_steps = int(int(state["total_steps"]) * scale)
        self.train_seconds = float(state["train_seconds"])
        self.mean, self.std = list(state["mean"]), list(state["std"])
        self.epoch_start_rng = state["epoch_start_rng"]
        skip = int(int(state["batch_in_epoch"]) * scale)
        # Mid-epoch: replay the epoch's order from its start; else carry on from where it was.
        self.generator.set_state(self.epoch_start_rng if skip else state["generator"])
        set_rng_state(state["rng"])
        return int(state["epoch"]), skip


def train(config: TrainConfig, resume: bool = False, quiet: bool = False) -> dict:
    """Train per `config` into `config.out` (or continue it: `resume`); returns the final
    metrics."""
    threads = torch.get_num_threads()
    try:
        with ddp.process_group(config.device):   # torchrun's group, left once at the end
            return _train(config, resume, quiet)
    finally:
        torch.set_num_threads(threads)  # the run may have chosen its own; give it back


def stored_config(out: str | Path) -> TrainConfig:
    """The resolved config a run folder's checkpoint holds, pointed at `out`."""
    path = checkpoint_path(out)
    state = load_checkpoint(path, required_keys=("config",), types=CHECKPOINT_TYPES)
    return replace(config_from_saved(state["config"], str(path)), out=str(out))


# What resuming may change; the rest is the run's.
RESUMABLE = ("epochs", "time_budget", "device", "precision")


def _train(config: TrainConfig, resume: bool, quiet: bool) -> dict:
    run = _setup(config, resume, quiet)
    trainer, ctx = run.trainer, run.ctx
    step = run.threads.timed(trainer.train_step)
    stopped, accuracy, row = False, None, {"epoch": run.epoch}
    trainer.model.train()
    try:
        while trainer.steps_left() and not stopped:
            if run.skip == 0:
                trainer.epoch_start_rng = trainer.generator.get_state()
            window = EpochWindow(started=time.perf_counter(), batches=run.skip)
            bar = run.epoch_bar()
            for x, y in trainer.batches(run.skip):
                if not trainer.steps_left():
                    break
                loss, right = step(x, y, run.clock(window.started))
                window.add(len(y), loss, right)
                bar.update(1)
                if window.batches % 20 == 0 and not bar.disable:
                    bar.set_postfix(loss=f"{float(loss):.3f}")  # waits for the device
                if run.budget_spent(window.started):
                    stopped = True
                    break
            bar.close()
            accuracy, row = _end_epoch(run, window, done=stopped or not trainer.steps_left())
    finally:
        run.log.close()
    if accuracy is None:  # nothing left to train (a finished run resumed): just test
        accuracy = trainer.test_accuracy(tta=run.config.tta)
    result = {"test_accuracy": accuracy, "train_seconds": trainer.train_seconds,
              "threads": torch.get_num_threads(),
              "epochs": float(row["epoch"]), "steps": trainer.step, "stopped_by_budget": stopped,
              "run": str(run.out)}
    if ctx.is_main:
        atomic_write_text(run.out / "result.json", json.dumps(result, indent=2) + "\n")
    return result


@dataclass
class EpochWindow:
    """One epoch's (or a resumed part's) counts, summed on the device until the epoch ends."""
    started: float
    batches: int = 0          # batches of this epoch done, a resumed epoch's skipped ones too
    seen: int = 0
    loss_sum: Any = 0.0
    correct: Any = 0.0

    def add(self, images: int, loss: torch.Tensor, right: torch.Tensor) -> None:
        self.seen += images
        self.loss_sum = self.loss_sum + loss * images
        self.correct = self.correct + right
        self.batches += 1


@dataclass
class _Run:
    """One training session as `_setup` built it."""
    config: TrainConfig
    out: Path
    ctx: ddp.DistContext
    trainer: Trainer
    epoch: int                # the epoch under way
    skip: int                 # its batches done before (a resumed epoch)
    saved_epoch: Any          # what the checkpoint holds (None: nothing saved yet)
    log: MetricsLog | ddp.NullLog
    threads: ThreadPolicy
    quiet: bool

    def epoch_bar(self):
        trainer = self.trainer
        # The bar counts the planned steps (a budget's plan follows the clock, so a run may
        # stop short of them or, past them, go on a whole epoch at a time).
        planned = trainer.total_steps - trainer.step + self.skip
        remaining = min(trainer.steps_per_epoch, planned) if planned > self.skip else \
            trainer.steps_per_epoch
        total_epochs = math.ceil(trainer.total_steps / trainer.steps_per_epoch)
        return progress(total=remaining, initial=self.skip, unit="batch",
                        desc=f"epoch {self.epoch + 1}/{total_epochs}",
                        force=False if self.quiet or not self.ctx.is_main else None)

    def clock(self, started: float) -> float:
        """Seconds of training so far with a budget (the slowest rank's, so every rank keeps
        the same rate); 0 without one."""
        if self.config.time_budget is None:
            return 0.0
        return ddp.max_over_ranks(self.trainer.train_seconds + time.perf_counter() - started,
                                  self.ctx)

    def budget_spent(self, started: float) -> bool:
        return self.config.time_budget is not None and \
            self.clock(started) >= self.config.time_budget

    def save(self, row: dict, done: bool) -> None:
        """The checkpoint, atomically; weights gone NaN stop the run in one line instead."""
        path = self.out / CHECKPOINT_NAME
        try:
            save_checkpoint(path, self.trainer.state(self.epoch, self.skip, done))
        except NonFiniteWeights:  # never write (or call good) NaN weights
            kept = ("no checkpoint was saved" if self.saved_epoch is None else
                    f"the last good checkpoint is {path}, from epoch {self.saved_epoch}")
            raise UserError(f"the weights became NaN or infinite by epoch {row['epoch']}"
                            f" (train loss {row['train_loss']}); stopped ({kept})") from None
        self.saved_epoch = row["epoch"]


def _end_epoch(run: _Run, window: EpochWindow, done: bool) -> tuple[float, dict]:
    """After an epoch (or the part a stop left): test, log a row, save the checkpoint."""
    trainer, ctx = run.trainer, run.ctx
    if done and trainer.lookahead is not None:
        trainer.lookahead.finish()  # training time: it is part of the recipe
    synchronize(run.ctx.device)  # the device may still be running queued steps
    elapsed = time.perf_counter() - window.started
    trainer.train_seconds += elapsed
    finished_epoch = window.batches >= trainer.steps_per_epoch
    run.epoch, run.skip = (run.epoch + 1, 0) if finished_epoch else (run.epoch, window.batches)
    accuracy = trainer.test_accuracy(tta=run.config.tta and done)
    seen, loss_sum, correct = ddp.all_reduce_sum(
        [window.seen, float(window.loss_sum), float(window.correct)], ctx)
    row = dict(epoch=run.epoch if finished_epoch
               else round(run.epoch + window.batches / trainer.steps_per_epoch, 3),
               step=trainer.step, lr=f"{trainer.optimizer.param_groups[0]['lr']:.5g}",
               train_loss=f"{loss_sum / max(1, seen):.4f}",
               train_accuracy=f"{correct / max(1, seen):.4f}",
               test_accuracy=f"{accuracy:.4f}",
               train_seconds=f"{trainer.train_seconds:.1f}",
               images_per_second=f"{seen / max(elapsed, 1e-9):.0f}")
    run.log.log(**row)
    if ctx.is_main:
        if not run.quiet:
            print(f"epoch {row['epoch']}: loss {row['train_loss']}  test accuracy "
                  f"{accuracy:.2%}  ({trainer.train_seconds:.0f} s training)", file=sys.stderr)
        run.save(row, done)
        # loss.png, as in a chat run folder: the train loss of every epoch so far
        plot_curves(run.out / "metrics.csv", run.out / LOSS_PLOT, [("train_loss", "train")],
                    "cross-entropy (with the recipe's label smoothing)")
    return accuracy, row


def _setup(config: TrainConfig, resume: bool, quiet: bool) -> _Run:
    """The trainer, restored for a resume, its schedule planned for a budget, and the run
    folder started."""
    out = Path(config.out)
    ckpt_path = checkpoint_path(out)   # read from; saves go to out / CHECKPOINT_NAME
    resume_state = None
    ctx = ddp.init_distributed(config.device)
    # A group that torchrun restarted after a failure resumes from the checkpoint by itself.
    if resume or ddp.should_resume(ckpt_path, ctx):
        resume_state = load_checkpoint(ckpt_path, required_keys=("model", "config", "step"),
                                       types=CHECKPOINT_TYPES)
        saved = config_from_saved(resume_state["config"], str(ckpt_path))
        # Keep the run's recipe and model; only the length and the budget may change.
        config = replace(saved, out=config.out, plan_from_budget=False,
                         **{name: getattr(config, name) for name in RESUMABLE})
        if saved.schedule != "constant" and config.epochs != saved.epochs:
            print("warning: changing --epochs on resume stretches the learning-rate schedule",
                  file=sys.stderr)
    elif check_folder(out) and ckpt_path.exists():
        raise UserError(f"{out} already holds a run; pass --resume or choose another --out")
    if ctx.is_main:
        remove_stale_temps(out)   # left by a save that a kill interrupted
    seed_everything(config.seed)
    # Batches of 4 through the notes' 62k-parameter net give a thread too little work to pay
    # for the handoff: one thread is faster, and much faster on busy cores.
    threads = thread_policy(ctx.device, config.plan_from_budget and config.time_budget is not None,
                            fixed=1 if config.recipe == "tutorial" else None)
    data = load_data(config.data.source, config.data.valid_fraction, config.seed)
    say = print if not quiet and ctx.is_main else (lambda *a, **k: None)
    # Building the model and optimizer can take seconds (torch imports its compiler): a line
    # on either side, so a log never goes quiet for that long.
    say(f"data: {len(data.train_labels)} training and {len(data.test_labels)} test images, "
        f"{len(data.classes)} classes", file=sys.stderr, flush=True)
    with waiting(f"building the {config.model.name} model",
                 force=None if say is print else False):
        trainer = Trainer(config, data, ctx.device, ctx)
    say(f"model: {config.model.name}, {sum(p.numel() for p in trainer.model.parameters()):,} "
        f"parameters, {trainer.steps_per_epoch} steps an epoch", file=sys.stderr, flush=True)
    threads.period = trainer.steps_per_epoch   # re-picked every epoch
    epoch, skip = 0, 0
    if resume_state is not None:
        epoch, skip = trainer.restore(resume_state, ckpt_path)
        trainer.total_steps = max(trainer.step, round(config.epochs * trainer.steps_per_epoch))
    make_folder(out)
    if config.plan_from_budget and config.time_budget is not None:
        planning = time.perf_counter()
        trainer.plan_steps(config.time_budget)
        config = trainer.config   # with the planned epochs
        trainer.train_seconds += time.perf_counter() - planning  # it spends the budget too
    if ctx.is_main:  # rank 0 alone writes the run folder
        atomic_write_text(out / "config.json", json.dumps(to_dict(config), indent=2) + "\n")
        write_config_file(out, config)   # `--config` reproduces the run
    return _Run(config=config, out=out, ctx=ctx, trainer=trainer, epoch=epoch, skip=skip,
                saved_epoch=epoch if resume_state is not None else None,
                log=(MetricsLog(out / "metrics.csv", METRICS, CURVES) if ctx.is_main
                     else ddp.NullLog()),
                threads=threads, quiet=quiet)


def main(config: TrainConfig, resume: bool = False) -> int:
    result = train(config, resume=resume)
    if not ddp.is_main_process():
        return 0
    print(f"test accuracy {result['test_accuracy']:.2%} after {result['epochs']} epochs, "
          f"{result['train_seconds']:.1f} s of training -> {result['run']}")
    return 0
