"""Everything around `chat train`'s loop: the run folder, optimizers and the lr schedule,
validation, checkpoints and exact resume, the metrics log and the progress bar, torchrun.

`start_session` builds a `TrainSession` (the config resolved once, the data memory-mapped, the
model, its optimizers, the batch stream, the folder started or reopened) that the loop in
`chat.train.loop` drives. Under torchrun each rank takes its shard of every epoch
(`BatchStream(rank=, world_size=)`, per-rank batch `--batch-size`, so the global batch is that
times the world size) and rank 0 alone writes the run folder. A worker group that torchrun
restarts (--max-restarts) resumes from last.pt by itself.
"""

import csv
import math
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from torchtutor.chat import run_dir as rd
from torchtutor.chat.config import PrepareConfig, TrainConfig
from torchtutor.chat.data.batches import Batch, BatchStream, PairSource, sorted_batches
from torchtutor.chat.data.train_data import TrainingData, open_training_data
from torchtutor.chat.data.vocab import Vocab
from torchtutor.chat.model import Seq2Seq
from torchtutor.chat.train.objective import Objective
from torchtutor.runtime import distributed as ddp
from torchtutor.runtime import precision
from torchtutor.runtime.checkpoint import (
    NonFiniteWeights,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)
from torchtutor.runtime.config import from_dict, to_dict, write_config_file
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import (
    atomic_link,
    atomic_write,
    check_folder,
    make_folder,
    remove_stale_temps,
)
from torchtutor.runtime.progress import (
    MetricsLog,
    plot_curves,
    progress,
    read_metrics,
    waiting,
)
from torchtutor.runtime.seeding import rng_state, seed_everything, set_rng_state
from torchtutor.runtime.threads import ThreadPolicy, thread_policy


def unigram_from_counts(counts: Tensor) -> Tensor:
    """Each token's log share of the training replies' tokens (EOS included), add-one smoothed,
    from each token's count (the token store counts them in chunks).

    As the output layer's starting bias it makes the untrained decoder predict word
    frequencies, which it otherwise spends its first hundred or so steps learning: on Cornell
    the default recipe reached a validation loss of 3.57 at step 200 with it, against step 350
    without (bench/RESULTS.md).
    """
    smoothed = counts.double() + 1.0
    return (smoothed / smoothed.sum()).log().float()


def make_optimizers(model: Seq2Seq, config: TrainConfig) -> list[torch.optim.Optimizer]:
    """The notes' two Adams: encoder (with the embedding) at lr, decoder at lr * ratio.

    The fused implementation updates each tensor in one pass: 22 instead of 84 ms a step for
    the tutorial-size model on one CPU core (bench/RESULTS.md).
    """
    device = next(model.parameters()).device
    fused = device.type in ("cpu", "cuda")
    betas = (0.9, config.adam_beta2)
    return [torch.optim.Adam(model.encoder_parameters(), lr=config.lr, betas=betas, fused=fused),
            torch.optim.Adam(model.decoder_parameters(), lr=config.lr * config.decoder_lr_ratio,
                             betas=betas, fused=fused)]


def lr_factor(step: int, config: TrainConfig, spent: float | None = None) -> float:
    """Multiplier of the base learning rates before optimizer step `step + 1`.

    The decay runs over `schedule_steps`, or, for a run bound by its time budget alone, over
    the budget: `spent` is the share of it used so far (as vision's schedule follows its
    clock), so more time gives a longer, slower decay rather than a rate stuck at its floor.
    """
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if spent is not None:
        done = min(1.0, max(0.0, spent))
    else:
        span = max(1, config.schedule_steps - config.warmup_steps)
        done = min(1.0, max(0, step - config.warmup_steps) / span)
    if config.schedule == "cosine":
        decay = 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * done))
    elif config.schedule == "linear":
        decay = 1.0 - 0.95 * done
    else:
        decay = 1.0
    return warm * decay


def make_schedulers(optimizers: list[torch.optim.Optimizer], config: TrainConfig,
                    spent: Callable[[], float] | None = None,
                    ) -> list[torch.optim.lr_scheduler.LambdaLR]:
    """The lr schedule (`lr_factor`) of each optimizer; `spent()` gives the share of the time
    budget used, for a schedule that follows the clock."""
    return [torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, config, spent() if spent is not None else None))
        for opt in optimizers]


# --- evaluation ----------------------------------------------------------------------------


def eval_batches(indexed: list[tuple[list[int], list[int]]] | PairSource,
                 batch_size: int = 256) -> list[Batch]:
    """Fixed batches over a split, grouped by length so little is padding."""
    return list(sorted_batches(indexed, batch_size))


@torch.no_grad()
def validation_loss(model: Seq2Seq, batches: list[Batch], device: torch.device,
                    ctx: ddp.DistContext | None = None) -> float:
    """Mean NLL per real target token, teacher forced, in float32, dropout off.

    Under torchrun (`ctx`) each rank evaluates its share of the batches and the sums are
    all-reduced, so every rank gets the same figure.
    """
    ctx = ctx or ddp.DistContext()
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches[ddp.shard_bounds(len(batches), ctx)]:
        batch = batch.to(device)
        encoder_outputs, encoder_mask, hidden = model.encode(batch.inputs, batch.lengths)
        features = model.teacher_forced_features(batch.targets, hidden, encoder_outputs,
                                                 encoder_mask)
        logits = model.out(features[batch.mask])
        total += F.cross_entropy(logits, batch.targets[batch.mask], reduction="sum").item()
        count += batch.target_tokens
    model.train(was_training)
    total, count = ddp.all_reduce_sum([total, count], ctx)
    return total / count


def validation_sample(size: int, config: TrainConfig, out: Path, resume: bool,
                      ) -> np.ndarray | None:
    """Indices of the valid split's pairs (of `size`) that every validation of the run scores;
    None: all of them.

    `config.valid_pairs` of them, drawn once by the run's seed, so a validation costs the
    same on any corpus (the whole split of 50x Cornell took 11 minutes a pass) and its curve
    compares like with like (nanoGPT's `eval_iters` batches are the same idea). A resumed run
    reads the sample its folder saved (`rd.VALID_SAMPLE`).
    """
    path = out / rd.VALID_SAMPLE
    if resume and path.exists():
        try:
            sample = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"cannot read {path} ({str(exc)[:80]}); delete it to draw the "
                            "validation sample again") from None
        if sample.ndim != 1 or sample.dtype.kind not in "iu" or len(sample) == 0 or \
                int(sample.min()) < 0 or int(sample.max()) >= size:
            raise UserError(f"{path} does not fit the {size} validation pairs of this data; "
                            "delete it to draw the validation sample again")
        return sample.astype(np.int64)
    if config.valid_pairs == 0 or config.valid_pairs >= size:
        return None
    rng = np.random.default_rng(config.seed)
    return np.sort(rng.choice(size, config.valid_pairs, replace=False))


def save_validation_sample(out: Path, sample: np.ndarray | None) -> None:
    if sample is not None and not (out / rd.VALID_SAMPLE).exists():
        atomic_write(out / rd.VALID_SAMPLE, lambda f: np.save(f, sample))


# --- checkpoints and the run folder --------------------------------------------------------


@dataclass
class LoopState:
    step: int = 0
    train_seconds: float = 0.0
    tokens: int = 0
    valid_loss: float | None = None
    best_valid_loss: float | None = None
    stale_evaluations: int = 0     # evaluations since the best (--patience)


def checkpoint_state(config: TrainConfig, model: Seq2Seq, optimizers: list, schedulers: list,
                     stream: BatchStream, state: LoopState) -> dict:
    return {"model": model.state_dict(),
            "optimizers": [opt.state_dict() for opt in optimizers],
            "schedulers": [s.state_dict() for s in schedulers],
            "stream": stream.state_dict(),
            "rng": rng_state(),
            "model_config": asdict(model.config),
            "config": to_dict(config),    # the whole resolved run config
            **asdict(state)}


def restore(path: Path, model: Seq2Seq, optimizers: list, schedulers: list,
            stream: BatchStream) -> LoopState:
    ckpt = load_checkpoint(path, required_keys=("model", "optimizers", "schedulers", "stream",
                                                "rng", "step"),
                           types={"model": dict, "optimizers": list, "schedulers": list,
                                  "stream": dict, "rng": dict, "step": int,
                                  "train_seconds": (int, float), "tokens": int})
    load_state_dict_checked(model, ckpt["model"], path)
    try:
        for opt, sd in zip(optimizers, ckpt["optimizers"], strict=True):
            opt.load_state_dict(sd)
        for scheduler, sd in zip(schedulers, ckpt["schedulers"], strict=True):
            scheduler.load_state_dict(sd)
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError, IndexError) as exc:
        raise UserError(f"checkpoint {path} does not fit these optimizers "
                        f"({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})"
                        ) from None
    try:  # entries of the wrong type inside are as much a damaged file as a bad checksum
        stream.load_state_dict(ckpt["stream"])
        set_rng_state(ckpt["rng"])
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError, IndexError) as exc:
        raise UserError(f"checkpoint {path} is malformed: its data position or random state "
                        f"cannot be restored ({type(exc).__name__})") from None
    known = {f.name for f in fields(LoopState)}
    return LoopState(**{k: ckpt[k] for k in known if k in ckpt})


RETHREAD_EVERY = 200   # steps between two choices of the CPU thread count (time budgets only)


METRIC_FIELDS = ["step", "epoch", "train_loss", "valid_loss", "valid_ppl", "lr",
                 "tokens_per_s", "train_seconds"]
# The columns that are TensorBoard curves too, and their tags.


CURVES = {"train_loss": "loss/train", "valid_loss": "loss/valid", "valid_ppl": "perplexity/valid",
          "lr": "lr", "tokens_per_s": "tokens_per_s"}


def keep_metrics_until(path: Path, step: int) -> None:
    """Drop rows past `step` (written after the checkpoint a resumed run starts from).

    A file that is not a metrics table (no step column: damaged, or edited) is moved aside,
    not rewritten, and a new one begins; rows whose step is not a number are dropped.
    """
    if not path.exists():
        return
    try:
        rows = read_metrics(path)
        table = bool(rows) and "step" in rows[0] or \
            path.read_text(encoding="utf-8").startswith("step,")
    except (OSError, ValueError, csv.Error):   # UnicodeDecodeError is a ValueError
        rows, table = [], False
    if not table:
        aside = path.with_name(f"{path.name}.unreadable")
        path.replace(aside)
        say(f"{path} is not a metrics table; moved it to {aside.name} and started a new one")
        return
    rows = [r for r in rows if (r.get("step") or "").isdigit() and int(r["step"]) <= step]
    lines = [",".join(METRIC_FIELDS)] + [",".join(r.get(k, "") for k in METRIC_FIELDS)
                                         for r in rows]
    atomic_write(path, lambda f: f.write(("\n".join(lines) + "\n").encode()))


def plot_losses(metrics_path: Path, out_path: Path) -> None:
    """The train and validation loss curves, written atomically as a PNG."""
    plot_curves(metrics_path, out_path, [("train_loss", "train"), ("valid_loss", "validation")],
                "NLL per token")


# --- the run's length ----------------------------------------------------------------------


def say(text: str) -> None:
    """A line on stdout that does not break a progress bar."""
    tqdm.write(text, file=sys.stdout)


def resolve_length(config: TrainConfig, batches_per_epoch: int) -> TrainConfig:
    """The run's length in steps, and the lr decay's horizon, once the data is known.

    `--epochs` becomes steps; an unset horizon is the run's steps. A resumed run's config
    already holds its horizon, so a new length does not stretch its schedule.
    """
    steps = config.steps
    if config.epochs is not None:
        steps = max(1, math.ceil(config.epochs * batches_per_epoch))
    if steps is None and config.time_budget is None:
        raise UserError("give --steps, --epochs or --time-budget")
    # None: a run bound by its time budget alone decays over the budget (`lr_factor`).
    horizon = config.schedule_steps if config.schedule_steps is not None else steps
    return replace(config, steps=steps, epochs=None, schedule_steps=horizon)


# --- the session ---------------------------------------------------------------------------


@dataclass
class Window:
    """The steps since the last metrics row."""
    loss_sum: float = 0.0     # NLL summed over the window's real target tokens
    tokens: int = 0
    steps: int = 0
    seconds: float = 0.0

    def add(self, loss: float, tokens: int, seconds: float) -> None:
        self.loss_sum += loss * tokens
        self.tokens += tokens
        self.steps += 1
        self.seconds += seconds


@dataclass
class TrainSession:
    """One training session as `start_session` built it: what the loop and its helpers share."""
    config: TrainConfig           # resolved: the length, the vocabulary size, the data
    out: Path
    ctx: ddp.DistContext
    model: Seq2Seq
    objective: nn.Module          # the Objective, DDP-wrapped under torchrun
    optimizers: list[torch.optim.Optimizer]
    schedulers: list
    stream: BatchStream
    valid: list[Batch]
    autocast: AbstractContextManager
    state: LoopState
    saved_at: dict[str, int]      # the step each checkpoint file holds
    metrics: MetricsLog | ddp.NullLog
    bar: Any
    threads: ThreadPolicy
    evaluations: list[tuple[int, float, float]] = field(default_factory=list)
    reached: bool = False         # the target validation loss was reached
    valid_seconds: float = 0.0    # spent validating in this session

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def by_budget(self) -> bool:
        """Bound by a time budget (the bar then counts its seconds, not steps)."""
        return self.config.time_budget is not None

    @property
    def log_every(self) -> int:
        return max(1, min(50, self.config.eval_every))

    def done(self) -> bool:
        config, state = self.config, self.state
        return ((config.steps is not None and state.step >= config.steps)
                or (config.time_budget is not None and state.train_seconds >= config.time_budget)
                or self.reached or self.out_of_patience)

    @property
    def out_of_patience(self) -> bool:
        return self.config.patience is not None and \
            self.state.stale_evaluations >= self.config.patience

    def say(self, text: str) -> None:
        if self.ctx.is_main:
            say(text)

    def kept(self) -> str:
        """What a stop leaves, truthfully."""
        if rd.LAST in self.saved_at:
            return f"the last good checkpoint is {self.out / rd.LAST}, from step " \
                   f"{self.saved_at[rd.LAST]}"
        return "no checkpoint was saved"

    def save(self, name: str) -> None:
        """last.pt (the latest K saves kept), or best.pt: the same state as last.pt at this
        step, so a second name for that file rather than a second copy."""
        if not self.ctx.is_main:
            return
        step, last = self.state.step, self.out / rd.LAST
        if name == rd.BEST:
            self.save(rd.LAST)
            atomic_link(last, self.out / rd.BEST)
            self.saved_at[rd.BEST] = step
            return
        if self.saved_at.get(rd.LAST) == step and last.exists():
            return   # this step's state is saved already
        if self.config.keep_checkpoints > 1 and rd.LAST in self.saved_at and last.exists():
            atomic_link(last, self.out / f"last-{self.saved_at[rd.LAST]:07d}.pt")
            for old in sorted(self.out.glob("last-*.pt"))[:1 - self.config.keep_checkpoints]:
                old.unlink()
        try:
            save_checkpoint(last, checkpoint_state(
                self.config, self.model, self.optimizers, self.schedulers, self.stream,
                self.state))
        except NonFiniteWeights:  # never write (or call good) weights that hold NaN or inf
            raise UserError(f"the weights became NaN or infinite by step {step}; "
                            f"stopped ({self.kept()})") from None
        self.saved_at[rd.LAST] = step

    def advance_bar(self, seconds: float) -> None:
        """One step, or its seconds of a budget: never past the total (tqdm then drops the
        total, which the budget bar's format cannot show)."""
        if self.by_budget:
            self.bar.update(max(0.0, min(seconds, self.bar.total - self.bar.n)))
        else:
            self.bar.update(1)

    def close(self) -> None:
        self.threads.restore()
        self.bar.close()
        self.metrics.close()
        # The DDP wrapper's reducer holds torchrun's process group: dropped here, before the
        # group is left (`ddp.process_group`), so the group never ends inside its deallocation.
        self.objective = ddp.unwrap(self.objective)


def log_window(run: TrainSession, window: Window, evaluate_now: bool) -> None:
    """A metrics row for the window; at an evaluation also the validation loss, best.pt and
    the loss plot."""
    state, stream = run.state, run.stream
    loss_sum, tokens = ddp.all_reduce_sum([window.loss_sum, window.tokens], run.ctx)
    epoch = stream.epoch + stream.position / max(1, stream.batches_per_epoch)
    row = {"step": state.step, "epoch": f"{epoch:.3f}",
           "train_loss": f"{loss_sum / tokens:.4f}",
           "lr": f"{run.optimizers[0].param_groups[0]['lr']:.3g}",
           "tokens_per_s": f"{tokens / window.seconds:.0f}",
           "train_seconds": f"{state.train_seconds:.1f}"}
    if evaluate_now and run.valid:
        row.update(_evaluate(run))
    run.metrics.log(**row)
    run.bar.set_postfix_str(_postfix(row, run.config, state, window.seconds / window.steps))
    if "valid_loss" in row:
        run.say(f"step {state.step}: train loss {row['train_loss']}, valid loss "
                f"{row['valid_loss']} (ppl {row['valid_ppl']}), {row['tokens_per_s']} tokens/s")
    if evaluate_now:
        if state.valid_loss is not None and (state.best_valid_loss is None
                                             or state.valid_loss < state.best_valid_loss):
            state.best_valid_loss, state.stale_evaluations = state.valid_loss, 0
            run.save(rd.BEST)
        elif "valid_loss" in row:
            state.stale_evaluations += 1
            if run.out_of_patience:
                run.say(f"stopping early: no better validation loss in "
                        f"{state.stale_evaluations} evaluations (--patience)")
        if run.ctx.is_main:
            plot_losses(run.out / rd.METRICS, run.out / rd.LOSS_PLOT)


def _evaluate(run: TrainSession) -> dict[str, str]:
    """The validation loss (and whether it reached the target), as metrics columns."""
    state = run.state
    started = time.perf_counter()
    state.valid_loss = validation_loss(run.model, run.valid, run.device, run.ctx)
    run.valid_seconds += time.perf_counter() - started
    run.evaluations.append((state.step, state.train_seconds, state.valid_loss))
    if run.config.target_valid_loss is not None:
        run.reached = state.valid_loss <= run.config.target_valid_loss
    return {"valid_loss": f"{state.valid_loss:.4f}",
            "valid_ppl": f"{math.exp(min(state.valid_loss, 50.0)):.2f}"}


# --- setup ---------------------------------------------------------------------------------


def start_session(config: TrainConfig, resume: bool) -> TrainSession:
    """Everything the loop needs, and the run folder started (or reopened for resume)."""
    if not config.out:
        raise UserError("give the run folder (--out)")
    out = Path(config.out)
    ctx = ddp.init_distributed(config.device)
    # torchrun restarted the group after a worker died: carry on from the last checkpoint.
    resume = resume or ddp.should_resume(out / rd.LAST, ctx)
    _check_out(out, resume, ctx)
    seed_everything(config.seed)
    # The token store, memory-mapped (a prepared folder as it is, else prepared into out/data).
    data = open_training_data(config.data, out, resume, ctx)
    _check_data(config, data, out, resume)
    stream = BatchStream(data.split("train").view(config.direction), config.batch_size,
                         seed=config.seed, bucket=config.bucket, rank=ctx.rank,
                         world_size=ctx.world_size)
    valid_view = data.split("valid").view(config.direction)
    sample = validation_sample(len(valid_view), config, out, resume)
    valid = eval_batches(valid_view if sample is None else valid_view.subset(sample))
    # Resolved once: from here on `config` is the whole run, as the run folder records it.
    config = replace(resolve_length(config, stream.batches_per_epoch),
                     model=replace(config.model, vocab_size=len(data.vocab)))
    asked = config.data   # the corpus as asked for: config.yaml prepares it again from there
    config = replace(config, data=data.config)
    model, objective, optimizers = _build_model(config, data, ctx)
    state, saved_at = LoopState(), {}
    by_clock = config.schedule_steps is None   # the budget alone: the decay follows the clock
    schedulers = make_schedulers(optimizers, config, (lambda: state.train_seconds
                                                      / config.time_budget) if by_clock else None)
    if resume:
        state = restore(out / rd.LAST, model, optimizers, schedulers, stream)
        saved_at[rd.LAST] = state.step
        ddp.barrier(ctx)  # every rank has read last.pt before rank 0 may write it again
        if ctx.is_main:
            keep_metrics_until(out / rd.METRICS, state.step)
            say(f"resuming {out} at step {state.step}")
    elif ctx.is_main:
        make_folder(out)
    if ctx.is_main:
        _write_run_files(out, config, asked, data, sample, resume)
    return TrainSession(
        config=config, out=out, ctx=ctx, model=model,
        # DDP wraps the objective after any restore: it starts every rank from rank 0's weights.
        objective=ddp.wrap_model(objective, ctx), optimizers=optimizers,
        schedulers=schedulers, stream=stream, valid=valid,
        autocast=precision.autocast(ctx.device,
                                    precision.autocast_dtype(config.precision, ctx.device)),
        state=state, saved_at=saved_at,
        metrics=(MetricsLog(out / rd.METRICS, METRIC_FIELDS, CURVES) if ctx.is_main
                 else ddp.NullLog()),
        bar=_bar(config, state, ctx),
        # Runs bound by the clock re-pick 1 or all CPU threads every RETHREAD_EVERY steps.
        threads=thread_policy(ctx.device, config.time_budget is not None, ctx.world_size,
                              RETHREAD_EVERY))


def _check_out(out: Path, resume: bool, ctx: ddp.DistContext) -> None:
    """The run folder may be started (or continued, with `resume`); stale temporary files of
    an interrupted save go."""
    check_folder(out)
    if not resume and (out / rd.LAST).exists():
        raise UserError(f"{out} already holds a run; continue it with --resume or pick "
                        "another --out")
    if not resume:
        _refuse_foreign_files(out, ctx)
    if ctx.is_main:
        remove_stale_temps(out)   # left by a save that a kill interrupted


def _write_run_files(out: Path, config: TrainConfig, asked: PrepareConfig, data: TrainingData,
                     sample: np.ndarray | None, resume: bool) -> None:
    """config.json first: from then on the folder is known as a chat run's, so a kill before
    the first checkpoint leaves one that the next `chat train` starts again."""
    rd.write_config(out, config)
    if not resume:
        data.vocab.save(out / rd.VOCAB)
    save_validation_sample(out, sample)
    write_config_file(out, replace(config, data=asked))   # `--config` reproduces the run


def _build_model(config: TrainConfig, data: TrainingData, ctx: ddp.DistContext,
                 ) -> tuple[Seq2Seq, Objective, list[torch.optim.Optimizer]]:
    """The model on its device (its output bias started at the replies' word frequencies),
    the objective around it and its two optimizers."""
    # The first optimizer imports torch's compiler: seconds, said as they pass off a terminal.
    with waiting("building the model", force=None if ctx.is_main else False):
        model = Seq2Seq(config.model).to(ctx.device)
        if config.unigram_bias:  # a resumed run overwrites it with its saved weights
            with torch.no_grad():
                model.out.bias.copy_(unigram_from_counts(torch.from_numpy(
                    data.target_counts(config.direction))))
        return model, Objective(model), make_optimizers(model, config)


# The names a new run writes into its folder (besides checkpoints and TensorBoard events).
RUN_WRITES = (rd.CONFIG, "config.yaml", rd.VOCAB, rd.METRICS, rd.LOSS_PLOT, rd.BEST,
              rd.VALID_SAMPLE)


def _refuse_foreign_files(out: Path, ctx: ddp.DistContext) -> None:
    """A new run starts in a new or empty folder, or again over one of ours that stopped
    before its first checkpoint (said in a line); never over files torchtutor did not write."""
    taken = [name for name in RUN_WRITES if (out / name).exists()]
    if not taken:
        return
    try:
        rd.read_config(out)
    except UserError:
        raise UserError(f"{out} already holds {taken[0]}, which is not from a chat run; pick "
                        "another --out (nothing was changed)") from None
    if ctx.is_main:
        say(f"{out} holds a run stopped before its first checkpoint; starting it again")


def _check_data(config: TrainConfig, data: TrainingData, out: Path, resume: bool) -> None:
    if config.tutorial_compat and data.config.has_unk:
        raise UserError(f"--tutorial-compat needs a vocabulary without UNK and {data.folder} "
                        "has one; give --data the raw corpus instead")
    if resume and Vocab.load(out / rd.VOCAB).index2word != data.vocab.index2word:
        raise UserError(f"the corpus no longer gives the vocabulary saved in {out}; "
                        "cannot resume")
    if config.model.vocab_size not in (0, len(data.vocab)):
        raise UserError(f"the config's model has {config.model.vocab_size} outputs but the "
                        f"vocabulary of {data.config.corpus} holds {len(data.vocab)} tokens")
    if not len(data.split("train")):
        raise UserError(f"no training pairs in {data.config.corpus}")


BUDGET_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}{postfix}]"


def _bar(config: TrainConfig, state: LoopState, ctx: ddp.DistContext):
    """The bar's total is what ends the run: its budget in seconds, which ends it at the
    latest (the steps, when there are some too, are counted beside it), else its steps."""
    by_budget = config.time_budget is not None
    return progress(total=config.time_budget if by_budget else config.steps,
                    initial=state.train_seconds if by_budget else state.step, desc="train",
                    unit="s" if by_budget else "step", force=None if ctx.is_main else False,
                    bar_format=BUDGET_BAR if by_budget else None)


def _postfix(row: dict, config: TrainConfig, state: LoopState, step_seconds: float) -> str:
    left = []
    if config.steps is not None:
        left.append((config.steps - state.step) * step_seconds)
    if config.time_budget is not None:
        left.append(config.time_budget - state.train_seconds)
    steps = f"{state.step}/{config.steps}" if config.steps is not None else str(state.step)
    text = f"step {steps} loss {row['train_loss']} {row['tokens_per_s']} tok/s"
    if left:
        seconds = max(0.0, min(left))
        text += f" left {seconds:.0f} s" if seconds < 120 else f" left {seconds / 60:.1f} min"
    return text


# --- stored configs ------------------------------------------------------------------------


def stored_config(out: str | Path) -> TrainConfig:
    """The resolved config a run folder holds (config.json), pointed at `out`."""
    stored = rd.read_config(out)
    return from_dict(TrainConfig, {**stored["train"], "model": stored["model"],
                                   "data": stored["data"], "out": str(out)},
                     source=str(Path(out) / rd.CONFIG), strict=False)


def backward_config(forward: TrainConfig) -> TrainConfig:
    """The backward model's config: the forward run's recipe, into RUN_DIR/backward."""
    return replace(forward, out=str(Path(forward.out) / rd.BACKWARD), direction="backward",
                   backward=False)
