"""`torchtutor chat train`: teacher-forced seq2seq training with checkpoints and exact resume.

Layout, top to bottom: the objective (what one step differentiates), the step function,
evaluation, checkpoint state, the loop, `main`. The config (`TrainConfig`, nesting the model's
and the data's) and the recipes are chat.config's; `train` takes that config alone.

The loss is the masked negative log-likelihood of the reply's real (non-pad) tokens. The
default takes its mean over every real token of the batch; `--tutorial-compat` backpropagates
the notes' sum over time steps of each step's mean, decodes step by step, attends to padding
and has no UNK, so the two can be compared. Without compat, a fully teacher-forced batch runs
the whole-sequence decoder and projects only the real target positions onto the vocabulary.

The step function and the loop are separate, and the loss lives in an `nn.Module` (the
objective) so that DistributedDataParallel wraps it under torchrun: each rank takes its shard
of every epoch (`BatchStream(rank=, world_size=)`, per-rank batch `--batch-size`, so the global
batch is that times the world size), scales its loss so that DDP's gradient average is the
mean over the global batch's real tokens, and rank 0 alone writes the run folder. A worker
group that torchrun restarts (--max-restarts) resumes from last.pt by itself.
"""

import math
import random
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from torchtutor.chat import run_dir as rd
from torchtutor.chat.batches import Batch, BatchStream, PairSource, sorted_batches
from torchtutor.chat.config import DIRECTIONS, TrainConfig
from torchtutor.chat.model import Seq2Seq
from torchtutor.chat.train_data import data_of_run, open_training_data
from torchtutor.chat.vocab import SOS, Vocab
from torchtutor.runtime import distributed as ddp
from torchtutor.runtime.checkpoint import (
    NonFiniteWeights,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)
from torchtutor.runtime.config import from_dict, to_dict
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write, check_folder, make_folder, remove_stale_temps
from torchtutor.runtime.progress import MetricsLog, progress, read_metrics
from torchtutor.runtime.seeding import rng_state, seed_everything, set_rng_state
from torchtutor.runtime.threads import ThreadChooser


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    train_seconds: float        # time in training steps only
    tokens: int                 # real target tokens trained on
    valid_loss: float | None
    best_valid_loss: float | None
    reached_target: bool = False
    evaluations: list[tuple[int, float, float]] = field(default_factory=list)
    # (step, train_seconds, valid_loss) of every evaluation of this session


class NonFiniteLoss(Exception):
    pass


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 autocast pays off on GPUs that support it and on CPUs with AMX or AVX512-BF16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                flags = next((line for line in f if line.startswith("flags")), "").split()
        except OSError:
            return False
        return "amx_bf16" in flags or "avx512_bf16" in flags
    return False


def autocast_for(config: TrainConfig, device: torch.device) -> AbstractContextManager:
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and bf16_is_fast(device))
    if not use_bf16:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def unigram_log_probs(replies: list[list[int]], vocab_size: int) -> Tensor:
    """Each token's log share of the training replies' tokens (EOS included), add-one smoothed.

    As the output layer's starting bias it makes the untrained decoder predict word
    frequencies, which it otherwise spends its first hundred or so steps learning: on Cornell
    the default recipe reached a validation loss of 3.57 at step 200 with it, against step 350
    without (bench/RESULTS.md).
    """
    tokens = torch.tensor([t for reply in replies for t in reply], dtype=torch.long)
    return unigram_from_counts(torch.bincount(tokens, minlength=vocab_size))


def unigram_from_counts(counts: Tensor) -> Tensor:
    """`unigram_log_probs` from each token's count (the token store counts them in chunks)."""
    smoothed = counts.double() + 1.0
    return (smoothed / smoothed.sum()).log().float()


# --- the objective -------------------------------------------------------------------------

class Objective(nn.Module):
    """The training loss of one batch, as a module (so DDP could wrap it).

    forward returns (loss to backpropagate, summed NLL over real tokens (detached)).
    """

    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor, lengths: Tensor, targets: Tensor, mask: Tensor,
                teacher_forced: list[bool]) -> tuple[Tensor, Tensor]:
        model = self.model
        compat = model.config.tutorial_compat
        encoder_outputs, encoder_mask, hidden = model.encode(inputs, lengths)
        if all(teacher_forced) and not compat:
            # Whole sequence; only the real positions go through the output layer.
            features = model.teacher_forced_features(targets, hidden, encoder_outputs,
                                                     encoder_mask)
            logits = model.out(features[mask]).float()
            nll_sum = F.cross_entropy(logits, targets[mask], reduction="sum")
            return nll_sum / mask.sum(), nll_sum.detach()
        tokens = torch.full_like(targets[0], SOS)
        rows = []
        for t in range(targets.size(0)):
            log_probs, hidden, _ = model.decode_step(tokens, hidden, encoder_outputs,
                                                     encoder_mask)
            rows.append(-log_probs.gather(1, targets[t].unsqueeze(1)).squeeze(1))
            # Feed the true token, or the model's own guess (no gradient flows through it).
            tokens = targets[t] if teacher_forced[t] else log_probs.argmax(dim=1)
        nll = torch.stack(rows).float() * mask
        if compat:
            # The notes: each step's mean over its real tokens, summed over the steps.
            loss = (nll.sum(dim=1) / mask.sum(dim=1)).sum()
        else:
            loss = nll.sum() / mask.sum()
        return loss, nll.sum().detach()


def teacher_forcing_plan(ratio: float, steps: int, per_step: bool) -> list[bool]:
    """Per step whether to feed the true token: one draw per batch (the notes) or per step."""
    if per_step:
        return [random.random() < ratio for _ in range(steps)]
    return [random.random() < ratio] * steps


# --- one step ------------------------------------------------------------------------------

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


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base learning rates before optimizer step `step + 1`."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
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
                    ) -> list[torch.optim.lr_scheduler.LambdaLR]:
    return [torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, config))
            for opt in optimizers]


def train_step(objective: Objective, optimizers: list[torch.optim.Optimizer],
               schedulers: list, batch: Batch, config: TrainConfig,
               autocast: AbstractContextManager, loss_scale: float = 1.0) -> float:
    """One optimizer step on `batch`; returns the mean NLL per real target token.

    `loss_scale` multiplies the loss before backward (a DDP rank's share of the global mean,
    `ddp.share_of_global_mean`). Raises NonFiniteLoss before touching the weights when the
    loss or a gradient norm is NaN or infinite. The loss, the NLL sum and both norms are read
    back in one transfer, after backward: each read waits for the device, and on a GPU every
    wait leaves it idle while Python queues the next kernels.
    """
    model = ddp.unwrap(objective).model
    plan = teacher_forcing_plan(config.teacher_forcing, batch.max_target_len,
                                config.teacher_forcing_per_step)
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    with autocast:
        loss, nll_sum = objective(batch.inputs, batch.lengths, batch.targets, batch.mask, plan)
    (loss * loss_scale if loss_scale != 1.0 else loss).backward()
    # The notes clip the encoder's and the decoder's parameters separately.
    norms = [nn.utils.clip_grad_norm_(model.encoder_parameters(), config.clip),
             nn.utils.clip_grad_norm_(model.decoder_parameters(), config.clip)]
    value, nll, *norm_values = torch.stack(
        [loss.detach().float(), nll_sum.detach().float(),
         *(torch.as_tensor(n, device=loss.device).float() for n in norms)]).tolist()
    if not math.isfinite(value):
        raise NonFiniteLoss(value)
    if not all(math.isfinite(norm) for norm in norm_values):
        raise NonFiniteLoss(float("nan"))  # a finite loss with overflowing gradients
    for opt in optimizers:
        opt.step()
    for scheduler in schedulers:
        scheduler.step()
    return nll / batch.target_tokens


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


# --- checkpoints and the run folder --------------------------------------------------------

@dataclass
class LoopState:
    step: int = 0
    train_seconds: float = 0.0
    tokens: int = 0
    valid_loss: float | None = None
    best_valid_loss: float | None = None


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


def keep_metrics_until(path: Path, step: int) -> None:
    """Drop rows past `step` (written after the checkpoint a resumed run starts from)."""
    if not path.exists():
        return
    rows = [r for r in read_metrics(path) if int(r["step"]) <= step]
    lines = [",".join(METRIC_FIELDS)] + [",".join(r.get(k, "") for k in METRIC_FIELDS)
                                         for r in rows]
    atomic_write(path, lambda f: f.write(("\n".join(lines) + "\n").encode()))


def plot_losses(metrics_path: Path, out_path: Path) -> None:
    """The train and validation loss curves, written atomically as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key, label in (("train_loss", "train"), ("valid_loss", "validation")):
        points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
        if points:
            steps, losses = zip(*points, strict=True)
            ax.plot(steps, losses, label=label, marker="o" if key == "valid_loss" else None)
    ax.set_xlabel("step")
    ax.set_ylabel("NLL per token")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(out_path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)


# --- the loop ------------------------------------------------------------------------------

def oriented(splits: dict[str, list[tuple[str, str]]],
             direction: str) -> dict[str, list[tuple[str, str]]]:
    """The pairs as the model learns them: (query, reply) forward, (reply, query) backward.

    The backward model sees exactly the forward model's splits turned around, so no held-out
    query is ever a training target (the relevance it scores on test replies is honest).
    """
    if direction not in DIRECTIONS:
        raise UserError(f"direction must be forward or backward, not {direction!r}")
    if direction == "forward":
        return splits
    return {name: [(reply, query) for query, reply in pairs] for name, pairs in splits.items()}


def _say(text: str) -> None:
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
    horizon = config.schedule_steps if config.schedule_steps is not None else steps
    if horizon is None:
        raise UserError("a run bound by --time-budget alone needs --schedule-steps")
    return replace(config, steps=steps, epochs=None, schedule_steps=horizon)


def train(config: TrainConfig, resume: bool = False,
          after_step: Callable[[int, Seq2Seq, float], None] | None = None) -> TrainResult:
    """Train into `config.out`, per `config` (its model and data configs included).

    `after_step(step, model, loss)` runs after every step (the bench records the first losses
    with it; tests interrupt a run with it).
    """
    if not config.out:
        raise UserError("give the run folder (--out)")
    out = Path(config.out)
    ctx = ddp.init_distributed(config.device)
    device = ctx.device
    # torchrun restarted the group after a worker died: carry on from the last checkpoint.
    resume = resume or ddp.should_resume(out / rd.LAST, ctx)
    if config.tutorial_compat and config.data.has_unk:
        raise UserError("--tutorial-compat uses a vocabulary without UNK (has_unk=False)")
    check_folder(out)
    if not resume and (out / rd.LAST).exists():
        raise UserError(f"{out} already holds a run; continue it with --resume or pick "
                        "another --out")
    if ctx.is_main:
        remove_stale_temps(out)   # left by a save that a kill interrupted
    seed_everything(config.seed)
    # The token store, memory-mapped (a prepared folder as it is, else prepared into out/data).
    data = open_training_data(config.data, out, resume, ctx)
    vocab = data.vocab
    direction = config.direction
    if config.tutorial_compat and data.config.has_unk:
        raise UserError(f"--tutorial-compat needs a vocabulary without UNK and {data.folder} "
                        "has one; give --corpus the raw corpus instead")
    if resume:
        saved = Vocab.load(out / rd.VOCAB)
        if saved.index2word != vocab.index2word:
            raise UserError(f"the corpus no longer gives the vocabulary saved in {out}; "
                            "cannot resume")
    if config.model.vocab_size not in (0, len(vocab)):
        raise UserError(f"the config's model has {config.model.vocab_size} outputs but the "
                        f"vocabulary of {data.config.corpus} holds {len(vocab)} tokens")
    train_pairs = data.split("train").view(direction)
    if not len(train_pairs):
        raise UserError(f"no training pairs in {data.config.corpus}")
    valid = eval_batches(data.split("valid").view(direction))
    stream = BatchStream(train_pairs, config.batch_size, seed=config.seed, bucket=config.bucket,
                         rank=ctx.rank, world_size=ctx.world_size)
    # Resolved once: from here on `config` is the whole run, as the run folder records it.
    config = replace(resolve_length(config, stream.batches_per_epoch), data=data.config,
                     model=replace(config.model, vocab_size=len(vocab)))

    model = Seq2Seq(config.model).to(device)
    if config.unigram_bias:  # a resumed run overwrites it with its saved weights below
        with torch.no_grad():
            model.out.bias.copy_(unigram_from_counts(torch.from_numpy(
                data.target_counts(direction))))
    objective = Objective(model)
    optimizers = make_optimizers(model, config)
    schedulers = make_schedulers(optimizers, config)
    autocast = autocast_for(config, device)
    state = LoopState()
    say = _say if ctx.is_main else (lambda text: None)
    if resume:
        state = restore(out / rd.LAST, model, optimizers, schedulers, stream)
        ddp.barrier(ctx)  # every rank has read last.pt before rank 0 may write it again
        if ctx.is_main:
            keep_metrics_until(out / rd.METRICS, state.step)
        say(f"resuming {out} at step {state.step}")
    elif ctx.is_main:
        make_folder(out)
        vocab.save(out / rd.VOCAB)
    if ctx.is_main:
        train_section = to_dict(config)   # the resolved config: model, train and data
        del train_section["model"], train_section["data"]
        rd.write_config(out, config.model, train_section, to_dict(config.data))
    # DDP wraps the objective (after any restore: it starts every rank from rank 0's weights).
    objective = ddp.wrap_model(objective, ctx)

    # The step each checkpoint file holds, so a stop can say truthfully what was kept.
    saved_at = {rd.LAST: state.step} if resume else {}

    def kept() -> str:
        if rd.LAST in saved_at:
            return f"the last good checkpoint is {out / rd.LAST}, from step {saved_at[rd.LAST]}"
        return "no checkpoint was saved"

    def save(name: str) -> None:
        if not ctx.is_main:
            return
        try:
            save_checkpoint(out / name, checkpoint_state(config, model, optimizers, schedulers,
                                                         stream, state))
        except NonFiniteWeights:  # never write (or call good) weights that hold NaN or inf
            raise UserError(f"the weights became NaN or infinite by step {state.step}; "
                            f"stopped ({kept()})") from None
        saved_at[name] = state.step

    reached = False

    def done() -> bool:
        return ((config.steps is not None and state.step >= config.steps)
                or (config.time_budget is not None and state.train_seconds >= config.time_budget)
                or reached)

    evaluations: list[tuple[int, float, float]] = []
    metrics = MetricsLog(out / rd.METRICS, METRIC_FIELDS) if ctx.is_main else ddp.NullLog()
    # The bar's total is what ends the run: its steps, else its budget in seconds of training.
    by_budget = config.steps is None and config.time_budget is not None
    bar = progress(total=config.time_budget if by_budget else config.steps,
                   initial=state.train_seconds if by_budget else state.step, desc="train",
                   unit="s" if by_budget else "step", force=None if ctx.is_main else False,
                   bar_format=BUDGET_BAR if by_budget else None)
    window_loss, window_tokens, window_steps, window_seconds = 0.0, 0, 0, 0.0
    log_every = max(1, min(50, config.eval_every))
    batches = iter(stream)
    # Runs bound by the clock pick 1 or all CPU threads every RETHREAD_EVERY steps from their own
    # step times: on shared cores all threads can stall (see runtime/threads.py). Runs bound by
    # a step count keep torch's setting, so their weights do not depend on the machine's load.
    original_threads = torch.get_num_threads()
    threads = ThreadChooser(original_threads if config.time_budget is not None
                            and device.type == "cpu" and ctx.world_size == 1 else 1)
    model.train()
    try:
        while not done():
            period_index = state.step % RETHREAD_EVERY
            threads.before(period_index)
            started = time.perf_counter()
            batch = next(batches).to(device)
            synced = time.perf_counter()
            scale, global_tokens = ddp.share_of_global_mean(batch.target_tokens, ctx)
            # Time spent waiting here for rank 0 to finish writing a checkpoint is not training.
            started += time.perf_counter() - synced
            if config.tutorial_compat:
                scale = 1.0  # the notes' per-step means: each rank's own, then DDP's average
            try:
                loss = train_step(objective, optimizers, schedulers, batch, config, autocast,
                                  loss_scale=scale)
            except NonFiniteLoss as exc:
                raise UserError(f"loss became {exc.args[0]} at step {state.step + 1}; "
                                f"stopped ({kept()})") from None
            # The slowest rank's time, so all ranks agree when a time budget is spent.
            seconds = ddp.max_over_ranks(time.perf_counter() - started, ctx)
            threads.after(period_index, seconds)
            state.step += 1
            state.train_seconds += seconds
            state.tokens += global_tokens
            window_loss += loss * batch.target_tokens
            window_tokens += batch.target_tokens
            window_steps += 1
            window_seconds += seconds
            if after_step is not None:
                after_step(state.step, model, loss)
            ddp.fault_injection_point(state.step, ctx)  # test-only; see runtime/distributed.py

            evaluate_now = state.step % config.eval_every == 0 or done()
            if state.step % log_every == 0 or evaluate_now:
                window_loss, window_tokens = ddp.all_reduce_sum([window_loss, window_tokens],
                                                                ctx)
                epoch = stream.epoch + stream.position / max(1, stream.batches_per_epoch)
                row = {"step": state.step, "epoch": f"{epoch:.3f}",
                       "train_loss": f"{window_loss / window_tokens:.4f}",
                       "lr": f"{optimizers[0].param_groups[0]['lr']:.3g}",
                       "tokens_per_s": f"{window_tokens / window_seconds:.0f}",
                       "train_seconds": f"{state.train_seconds:.1f}"}
                if evaluate_now and valid:
                    state.valid_loss = validation_loss(model, valid, device, ctx)
                    row["valid_loss"] = f"{state.valid_loss:.4f}"
                    row["valid_ppl"] = f"{math.exp(min(state.valid_loss, 50.0)):.2f}"
                    evaluations.append((state.step, state.train_seconds, state.valid_loss))
                    if config.target_valid_loss is not None:
                        reached = state.valid_loss <= config.target_valid_loss
                metrics.log(**row)
                bar.set_postfix_str(_postfix(row, config, state, window_seconds / window_steps))
                if "valid_loss" in row:
                    say(f"step {state.step}: train loss {row['train_loss']}, valid loss "
                         f"{row['valid_loss']} (ppl {row['valid_ppl']}), "
                         f"{row['tokens_per_s']} tokens/s")
                window_loss, window_tokens, window_steps, window_seconds = 0.0, 0, 0, 0.0
                if evaluate_now:
                    improved = state.valid_loss is not None and (
                        state.best_valid_loss is None or state.valid_loss < state.best_valid_loss)
                    if improved:
                        state.best_valid_loss = state.valid_loss
                        save(rd.BEST)
                    if ctx.is_main:
                        plot_losses(out / rd.METRICS, out / rd.LOSS_PLOT)
            if state.step % config.checkpoint_every == 0 or done():
                save(rd.LAST)
            bar.update(seconds if by_budget else 1)
    finally:
        torch.set_num_threads(original_threads)
        bar.close()
        metrics.close()
    if not valid:  # nothing to validate on: the best checkpoint is the last one
        save(rd.BEST)
    ddp.cleanup(ctx)
    return TrainResult(run_dir=out, steps=state.step, train_seconds=state.train_seconds,
                       tokens=state.tokens, valid_loss=state.valid_loss,
                       best_valid_loss=state.best_valid_loss, reached_target=reached,
                       evaluations=evaluations)


BUDGET_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}{postfix}]"


def _postfix(row: dict, config: TrainConfig, state: LoopState, step_seconds: float) -> str:
    left = []
    if config.steps is not None:
        left.append((config.steps - state.step) * step_seconds)
    if config.time_budget is not None:
        left.append(config.time_budget - state.train_seconds)
    text = f"step {state.step} loss {row['train_loss']} {row['tokens_per_s']} tok/s"
    if left:
        seconds = max(0.0, min(left))
        text += f" left {seconds:.0f} s" if seconds < 120 else f" left {seconds / 60:.1f} min"
    return text


# --- the command ---------------------------------------------------------------------------

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


def _report(result: TrainResult, what: str) -> None:
    valid = (f"validation loss {result.valid_loss:.3f} (perplexity "
             f"{math.exp(min(result.valid_loss, 50.0)):.1f})"
             if result.valid_loss is not None else "no validation split")
    rate = result.tokens / result.train_seconds if result.train_seconds else 0.0
    if ddp.is_main_process():
        steps = f"{result.steps} step{'s' if result.steps != 1 else ''}"
        print(f"trained {what} {steps} in {result.train_seconds:.0f} s "
              f"({rate:.0f} tokens/s); {valid}; run folder {result.run_dir}")


def main(config: TrainConfig, resume: bool = False) -> int:
    """Train the run (and, by default, its backward model), or continue it (`resume`)."""
    what = "the backward model" if config.direction == "backward" else "the chatbot"
    _report(train(config, resume=resume), what)
    if config.backward and config.direction == "forward":
        backward = backward_config(config)
        resume = (Path(backward.out) / rd.LAST).exists()
        if resume:  # continue it with its own stored config, to the forward run's length
            backward = replace(stored_config(backward.out), device=config.device,
                               steps=config.steps, epochs=config.epochs,
                               time_budget=config.time_budget)
        # The forward run's prepared data, mapped again rather than prepared a second time.
        backward = replace(backward, data=data_of_run(config.out, backward.data))
        _report(train(backward, resume=resume), "the backward model")
    return 0
