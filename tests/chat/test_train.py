"""Training: the losses, the CLI run folder, exact resume, kill -9 safety, NaN stops."""

import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from torchtutor import cli
from torchtutor.chat import run_dir as rd
from torchtutor.chat.config import TUTORIAL, TrainConfig
from torchtutor.chat.data.batches import index_pairs, make_batch
from torchtutor.chat.data.prepare import PrepareConfig, prepare_data
from torchtutor.chat.model import ModelConfig, Seq2Seq
from torchtutor.chat.run_dir import load_trained
from torchtutor.chat.train.loop import train
from torchtutor.chat.train.objective import Objective, teacher_forcing_plan
from torchtutor.chat.train.run import (
    lr_factor,
    make_optimizers,
    stored_config,
    unigram_from_counts,
)
from torchtutor.runtime.checkpoint import load_checkpoint
from torchtutor.runtime.config import from_dict
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.progress import read_metrics

TINY = ModelConfig(hidden_size=24, encoder_layers=2, decoder_layers=2, attention="dot", dropout=0.1)
# Two small hand-made pairs of different lengths (ids >= 3; EOS = 2 ends each side).
PAIRS = [([5, 6, 7, 2], [8, 9, 2]), ([10, 2], [11, 12, 13, 14, 2]), ([4, 4, 2], [2])]


def tiny_model(compat: bool = False, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(ModelConfig(vocab_size=16, hidden_size=12, dropout=0.0,
                               tutorial_compat=compat))


def hand_loss_terms(model: Seq2Seq, batch):
    """Per-position NLL (T, B) from the whole-sequence decoder, computed independently."""
    enc, mask, hidden = model.encode(batch.inputs, batch.lengths)
    log_probs = model.decode_teacher_forced(batch.targets, hidden, enc, mask)
    return -log_probs.gather(2, batch.targets.unsqueeze(2)).squeeze(2)


def test_default_loss_is_the_mean_over_real_tokens():
    model = tiny_model()
    batch = make_batch(PAIRS)
    nll = hand_loss_terms(model, batch)
    expected = nll[batch.mask].sum() / batch.mask.sum()
    objective = Objective(model)
    whole, nll_sum = objective(batch.inputs, batch.lengths, batch.targets, batch.mask,
                               [True] * batch.max_target_len)
    torch.testing.assert_close(whole, expected)
    torch.testing.assert_close(nll_sum, nll[batch.mask].sum())
    # The last step's decision feeds nothing, so this runs the step-by-step path on the same
    # inputs: it must give the same loss.
    stepwise, _ = objective(batch.inputs, batch.lengths, batch.targets, batch.mask,
                            [True] * (batch.max_target_len - 1) + [False])
    torch.testing.assert_close(stepwise, expected)


def test_tutorial_compat_loss_is_the_sum_of_per_step_means():
    model = tiny_model(compat=True)
    batch = make_batch(PAIRS)
    nll = hand_loss_terms(model, batch)
    mask = batch.mask
    expected = sum(nll[t][mask[t]].mean() for t in range(mask.size(0)))
    loss, nll_sum = Objective(model)(batch.inputs, batch.lengths, batch.targets, mask,
                                     [True] * batch.max_target_len)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(nll_sum, nll[mask].sum())
    assert not torch.isclose(loss, nll[mask].mean())  # the two reductions do differ here


def test_free_running_feeds_the_models_own_guesses():
    model = tiny_model()
    batch = make_batch(PAIRS)
    plan_tf = [True] * batch.max_target_len
    plan_free = [False] * batch.max_target_len
    objective = Objective(model)
    teacher, _ = objective(batch.inputs, batch.lengths, batch.targets, batch.mask, plan_tf)
    free, _ = objective(batch.inputs, batch.lengths, batch.targets, batch.mask, plan_free)
    assert not torch.isclose(teacher, free)


def test_teacher_forcing_plans():
    assert teacher_forcing_plan(1.0, 5, per_step=False) == [True] * 5
    assert teacher_forcing_plan(0.0, 5, per_step=True) == [False] * 5
    random.seed(3)
    per_batch = [set(teacher_forcing_plan(0.5, 8, per_step=False)) for _ in range(20)]
    assert all(len(s) == 1 for s in per_batch) and len(set().union(*per_batch)) == 2
    per_step = teacher_forcing_plan(0.5, 200, per_step=True)
    assert 50 < sum(per_step) < 150


def test_lr_schedule_warms_up_and_decays():
    config = replace(TUTORIAL, warmup_steps=10, schedule="cosine", schedule_steps=110)
    assert lr_factor(0, config) == pytest.approx(0.1)
    assert lr_factor(9, config) == pytest.approx(1.0)
    assert lr_factor(60, config) == pytest.approx(0.05 + 0.95 * 0.5)
    assert lr_factor(110, config) == pytest.approx(0.05)
    assert lr_factor(500, replace(TUTORIAL, schedule_steps=4000)) == 1.0
    # bound by a time budget alone, the decay follows the share of the budget spent
    linear = replace(TUTORIAL, schedule="linear", steps=None, time_budget=60.0)
    assert lr_factor(7, linear, spent=0.5) == pytest.approx(1 - 0.95 * 0.5)
    assert lr_factor(7, linear, spent=2.0) == pytest.approx(0.05)


def test_a_time_budget_run_decays_its_rate_over_the_budget(tmp_path):
    config = replace(TUTORIAL, out=str(tmp_path / "clock"), steps=None, time_budget=2.0,
                     schedule="linear", batch_size=16, eval_every=5, checkpoint_every=1000,
                     precision="fp32", device="cpu", model=TINY, data=PrepareConfig())
    train(config)
    rates = [float(r["lr"]) for r in read_metrics(tmp_path / "clock" / rd.METRICS)]
    assert rates == sorted(rates, reverse=True) and rates[0] > rates[-1]
    assert rates[-1] < 0.5 * config.lr      # most of the decay is spent by the end
    assert stored_config(tmp_path / "clock").schedule_steps is None


def configs_from_args(args):
    config = cli.chat_train_config(args)
    return config, config.model, config.data


def _args(out, *extra):
    return cli.build_parser().parse_args(["chat", "train", "--data", "chatterbot", "--out",
                                          str(out), *extra])


def test_recipes_and_compat_options(tmp_path):
    config, model, data = configs_from_args(_args(tmp_path, "--tutorial-compat"))
    assert config.recipe == "tutorial" and config.tutorial_compat and not data.has_unk
    assert model.tutorial_compat
    assert (config.batch_size, config.lr, config.decoder_lr_ratio, config.clip,
            config.teacher_forcing, config.steps) == (64, 1e-4, 5.0, 50.0, 1.0, 4000)
    assert (model.hidden_size, model.encoder_layers, model.decoder_layers, model.attention,
            model.dropout) == (500, 2, 2, "dot", 0.1)
    config, model, data = configs_from_args(_args(tmp_path, "--lr", "0.01", "--steps", "7"))
    assert config.recipe == "default" and data.has_unk and config.lr == 0.01
    assert config.steps == 7 and model.hidden_size == 500


def test_adam_options_reach_both_optimizers(tmp_path):
    config, *_ = configs_from_args(_args(tmp_path, "--adam-beta2", "0.95", "--lr", "0.002",
                                         "--decoder-lr-ratio", "3"))
    encoder_opt, decoder_opt = make_optimizers(tiny_model(), config)
    assert encoder_opt.param_groups[0]["betas"] == (0.9, 0.95)
    assert decoder_opt.param_groups[0]["betas"] == (0.9, 0.95)
    assert encoder_opt.param_groups[0]["lr"] == 0.002
    assert decoder_opt.param_groups[0]["lr"] == pytest.approx(0.006)
    assert encoder_opt.param_groups[0]["fused"]  # one pass per tensor on the CPU
    tutorial, *_ = configs_from_args(_args(tmp_path, "--tutorial-compat"))
    assert tutorial.adam_beta2 == 0.999
    with pytest.raises(UserError, match="--adam-beta2"):
        configs_from_args(_args(tmp_path, "--adam-beta2", "1"))


def unigram_log_probs(replies: list[list[int]], vocab_size: int) -> torch.Tensor:
    """The replies' token counts (EOS included) as the output bias training starts from."""
    tokens = torch.tensor([t for reply in replies for t in reply], dtype=torch.long)
    return unigram_from_counts(torch.bincount(tokens, minlength=vocab_size))


def test_unigram_bias_starts_the_output_at_word_frequencies(tmp_path):
    log_probs = unigram_log_probs([[5, 5, 2], [5, 7, 2]], vocab_size=8)
    assert log_probs.exp().sum().item() == pytest.approx(1.0)
    counts = [1, 1, 3, 1, 1, 4, 1, 2]                    # add-one smoothed
    assert log_probs.tolist() == pytest.approx([math.log(c / 14) for c in counts])
    default, *_ = configs_from_args(_args(tmp_path))
    tutorial, *_ = configs_from_args(_args(tmp_path, "--tutorial-compat"))
    off, *_ = configs_from_args(_args(tmp_path, "--no-unigram-bias"))
    assert default.unigram_bias and not tutorial.unigram_bias and not off.unigram_bias

    biases = {}

    def first_bias(step, model, loss):
        if step == 1:
            biases[len(biases)] = model.out.bias.detach().clone()

    for flag in (True, False):
        config = replace(TUTORIAL, out=str(tmp_path / f"u{flag}"), steps=1, batch_size=16,
                         lr=1e-3, eval_every=100, precision="fp32", device="cpu",
                         unigram_bias=flag, model=TINY, data=PrepareConfig())
        train(config, after_step=first_bias)
    # One Adam step at lr 1e-3 x5 moves each bias by at most about 5e-3 from where it started.
    data = prepare_data(PrepareConfig())
    replies = [reply for _, reply in index_pairs(data.splits["train"], data.vocab)]
    expected = unigram_log_probs(replies, len(data.vocab))
    assert (biases[0] - expected).abs().max() < 0.01
    assert (biases[1] - expected).abs().max() > 1.0     # nn.Linear's own start is far off


def run_cli(*argv) -> int:
    return cli.main(["chat", "train", "--data", "chatterbot", *argv])


def test_chat_train_cli_writes_a_complete_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    start = time.perf_counter()
    assert run_cli("--out", str(out), "--steps", "20", "--hidden-size", "24",
                   "--batch-size", "16", "--eval-every", "10", "--device", "cpu") == 0
    assert time.perf_counter() - start < 60
    for name in (rd.CONFIG, rd.VOCAB, rd.METRICS, rd.LOSS_PLOT, rd.LAST, rd.BEST):
        assert (out / name).is_file(), name
    assert (out / rd.LOSS_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "trained the chatbot 20 steps" in text and "validation loss" in text
    # The default recipe trains the backward model (reply -> query) next, on the same data.
    assert "trained the backward model 20 steps" in text
    back = rd.read_config(out / rd.BACKWARD)
    forward_data = rd.read_config(out)["data"]
    assert back["train"]["direction"] == "backward"
    # It maps the forward run's prepared folder: the very same splits and vocabulary.
    assert {k: v for k, v in back["data"].items() if k != "corpus"} == \
        {k: v for k, v in forward_data.items() if k != "corpus"}
    assert Path(back["data"]["corpus"]) == out / "data"
    assert (out / rd.BACKWARD / rd.VOCAB).read_text() == (out / rd.VOCAB).read_text()
    assert load_trained(out, torch.device("cpu")).backward is not None
    rows = rd.read_config(out)
    assert rows["model"]["hidden_size"] == 24 and rows["train"]["steps"] == 20
    # TensorBoard curves beside metrics.csv, read back with tensorboard's own reader
    events = EventAccumulator(str(out))
    events.Reload()
    assert {"loss/train", "loss/valid", "perplexity/valid", "lr", "tokens_per_s"} <= \
        set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss/valid")] == [10, 20]
    metrics = (out / rd.METRICS).read_text().splitlines()
    assert metrics[0].startswith("step,") and metrics[-1].startswith("20,")
    last = load_checkpoint(out / rd.LAST)
    assert last["step"] == 20 and last["stream"]["position"] + last["stream"]["epoch"] > 0
    bot = load_trained(out, torch.device("cpu"))
    assert not bot.model.training and bot.max_length == 10 and bot.vocab.has_unk
    # every checkpoint holds the whole resolved config, the run folder's config.json too
    resolved = from_dict(TrainConfig, last["config"])
    assert resolved == stored_config(out) and resolved.model.vocab_size == len(bot.vocab)
    assert (resolved.steps, resolved.schedule_steps, resolved.model.hidden_size) == (20, 20, 24)
    # a second run into the same folder is refused, with one line
    assert run_cli("--out", str(out), "--steps", "2") == 2
    assert "--resume" in capsys.readouterr().err
    # --resume refuses options that contradict the run's config, instead of ignoring them
    assert run_cli("--out", str(out), "--resume", "--lr", "0.5", "--steps", "21") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lr is 0.0001 there, not 0.5" in err


def _train(out, steps, after_step=None, resume=False, compat=False, **changes):
    config = replace(TUTORIAL, out=str(out), steps=steps, batch_size=16, lr=3e-3, eval_every=3,
                     checkpoint_every=4, bucket=True, teacher_forcing=0.7,
                     warmup_steps=2, schedule="cosine", schedule_steps=steps,
                     precision="fp32", device="cpu", tutorial_compat=compat, model=TINY,
                     data=PrepareConfig(has_unk=not compat), **changes)
    return train(config, resume=resume, after_step=after_step)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("compat", [False, True])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, compat):
    whole = _train(tmp_path / "whole", 10, compat=compat)

    def stop_at_6(step, model, loss):
        if step == 6:
            raise Interrupt
    with pytest.raises(Interrupt):
        _train(tmp_path / "cut", 10, after_step=stop_at_6, compat=compat)
    assert load_checkpoint(tmp_path / "cut" / rd.LAST)["step"] == 4
    resumed = _train(tmp_path / "cut", 10, resume=True, compat=compat)
    assert resumed.steps == whole.steps == 10
    a = load_checkpoint(tmp_path / "whole" / rd.LAST)
    b = load_checkpoint(tmp_path / "cut" / rd.LAST)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["stream"] == b["stream"]
    steps = [int(line.split(",")[0])
             for line in (tmp_path / "cut" / rd.METRICS).read_text().splitlines()[1:]]
    assert steps == sorted(set(steps))  # rows past the checkpoint were dropped, none doubled


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    def poison(step, model, loss):
        if step == 5:
            with torch.no_grad():
                model.out.weight.fill_(float("nan"))
    with pytest.raises(UserError) as info:
        _train(tmp_path / "nan", 10, after_step=poison)
    message = str(info.value)
    assert "\n" not in message and "nan" in message and "step 6" in message
    last = load_checkpoint(tmp_path / "nan" / rd.LAST)
    assert last["step"] == 4
    assert all(torch.isfinite(t).all() for t in last["model"].values())


def test_kill_9_never_corrupts_a_checkpoint(tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])}
    command = [sys.executable, "-m", "torchtutor", "chat", "train", "--data", "chatterbot",
               "--out", str(out), "--steps", "100000", "--hidden-size", "24",
               "--batch-size", "8", "--checkpoint-every", "1", "--eval-every", "5",
               "--device", "cpu"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (out / rd.LAST).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (out / rd.LAST).exists(), "training never wrote a checkpoint"
        time.sleep(0.7)  # a checkpoint is written every step, so this lands mid-work
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    state = load_checkpoint(out / rd.LAST)
    assert state["step"] >= 1
    before = state["step"]
    assert run_cli("--out", str(out), "--resume", "--steps", str(before + 2),
                   "--device", "cpu") == 0
    assert load_checkpoint(out / rd.LAST)["step"] == before + 2


def test_load_trained_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_trained(tmp_path / "missing", torch.device("cpu"))
    out = tmp_path / "run"
    _train(out, 4)
    # best.pt may be a second name (hard link) for a save: damage a copy of its own
    damaged = (out / rd.BEST).read_bytes()[:100]
    (out / rd.BEST).unlink()
    (out / rd.BEST).write_bytes(damaged)
    with pytest.raises(UserError) as info:
        load_trained(out, torch.device("cpu"))
    assert "\n" not in str(info.value) and "corrupt" in str(info.value)
    assert load_trained(out, torch.device("cpu"), which="last").model.config.hidden_size == 24
    (out / rd.CONFIG).write_text("{not json")
    with pytest.raises(UserError, match="cannot read"):
        load_trained(out, torch.device("cpu"), which="last")


def test_validation_loss_is_finite_and_logged(tmp_path):
    result = _train(tmp_path / "v", 6)
    assert [e[0] for e in result.evaluations] == [3, 6]
    assert all(math.isfinite(e[2]) for e in result.evaluations)
    assert result.best_valid_loss == min(e[2] for e in result.evaluations)


def test_validation_scores_a_fixed_sample_saved_with_the_run(tmp_path):
    from torchtutor.chat.data.train_data import open_training_data
    from torchtutor.chat.train.run import eval_batches, validation_loss

    out = tmp_path / "run"
    first = _train(out, 3, valid_pairs=8)
    sample = np.load(out / rd.VALID_SAMPLE)
    valid = open_training_data(PrepareConfig(corpus=str(out / "data")), out, True) \
        .split("valid").view()
    assert len(valid) > 8 and len(sample) == 8
    assert list(sample) == sorted(set(sample.tolist())) and sample.max() < len(valid)

    def loss_on(indices, which="last"):
        model = load_trained(out, torch.device("cpu"), which=which).model
        return validation_loss(model, eval_batches(valid.subset(indices)), torch.device("cpu"))
    assert first.valid_loss == pytest.approx(loss_on(sample), rel=1e-5)
    # --resume scores the pairs the folder saved, not a sample drawn again.
    np.save(out / rd.VALID_SAMPLE, sample[:3])
    resumed = _train(out, 6, resume=True, valid_pairs=8)
    assert resumed.valid_loss == pytest.approx(loss_on(sample[:3]), rel=1e-5)
    # 0: the whole split, and nothing saved
    whole = _train(tmp_path / "whole", 3, valid_pairs=0)
    assert not (tmp_path / "whole" / rd.VALID_SAMPLE).exists()
    assert whole.valid_loss != pytest.approx(first.valid_loss)
    # a damaged sample stops a resume with one line
    (out / rd.VALID_SAMPLE).write_bytes(b"garbage")
    with pytest.raises(UserError, match="delete it to draw the validation sample again"):
        _train(out, 7, resume=True, valid_pairs=8)


def test_only_runs_bound_by_the_clock_choose_their_thread_count(tmp_path, monkeypatch):
    from torchtutor.chat.train import run as train_module
    from torchtutor.runtime import threads as threads_module

    made: list[tuple[int, list[int]]] = []

    class Recording(threads_module.ThreadChooser):
        def __init__(self, most):
            super().__init__(most)
            made.append((most, []))

        def before(self, index):
            made[-1][1].append(index)
            super().before(index)

    monkeypatch.setattr(threads_module, "ThreadChooser", Recording)
    monkeypatch.setattr(train_module, "RETHREAD_EVERY", 4)
    threads = torch.get_num_threads()
    _train(tmp_path / "steps", 6)
    config = replace(TUTORIAL, out=str(tmp_path / "clock"), steps=9, time_budget=600.0,
                     batch_size=16, eval_every=100, checkpoint_every=100, precision="fp32",
                     device="cpu", model=TINY, data=PrepareConfig())
    train(config)
    assert made[0][0] == 1                            # a step count: torch's setting stays
    assert made[1] == (threads, [0, 1, 2, 3, 0, 1, 2, 3, 0])   # re-picked every 4 steps
    assert torch.get_num_threads() == threads         # and given back afterwards


def test_patience_stops_early_and_keep_checkpoints_keeps_the_latest(tmp_path, monkeypatch):
    from torchtutor.chat.train import run as train_module

    losses = iter([5.0, 4.0, 4.5, 4.6, 4.7, 4.8])   # the best at step 2, then worse twice
    monkeypatch.setattr(train_module, "validation_loss", lambda *args: next(losses))
    out = tmp_path / "patient"
    config = replace(TUTORIAL, out=str(out), steps=8, batch_size=16, eval_every=1,
                     checkpoint_every=1, patience=2, keep_checkpoints=3, precision="fp32",
                     device="cpu", model=TINY, data=PrepareConfig())
    result = train(config)
    assert result.steps == 4 and result.best_valid_loss == 4.0
    assert load_checkpoint(out / rd.LAST)["step"] == 4
    assert sorted(p.name for p in out.glob("last-*.pt")) == ["last-0000002.pt",
                                                             "last-0000003.pt"]
    # best.pt is a second name for step 2's save, not a copy of it
    assert (out / rd.BEST).samefile(out / "last-0000002.pt")
    assert load_checkpoint(out / rd.BEST)["step"] == 2
