"""The chat config: recipes are valid instances, every value is checked in one line, and the
command line only replaces the recipe's values with the options given."""

import math
from dataclasses import replace

import pytest

from torchtutor import cli
from torchtutor.chat.config import (
    DEFAULT,
    DEMO,
    RECIPES,
    TUTORIAL,
    ModelConfig,
    PrepareConfig,
    TrainConfig,
)
from torchtutor.runtime.config import ConfigError, flatten, from_dict, to_dict
from torchtutor.runtime.errors import UserError


def test_recipes_are_configs_that_differ_only_where_they_say():
    assert DEFAULT == TrainConfig() and set(RECIPES) == {"default", "tutorial", "demo"}
    for name, recipe in RECIPES.items():
        assert recipe.recipe == name
        assert from_dict(TrainConfig, to_dict(recipe)) == recipe   # the dict round trip
    changed = {k for k, v in flatten(to_dict(TUTORIAL)).items()
               if flatten(to_dict(DEFAULT))[k] != v}
    assert changed == {"recipe", "steps", "batch_size", "decoder_lr_ratio", "unigram_bias",
                       "schedule", "precision", "eval_every", "checkpoint_every", "backward"}
    assert DEMO.model.hidden_size == 256 and DEMO.data.valid_fraction == 0.0


@pytest.mark.parametrize("bad", [
    {"lr": math.nan}, {"lr": math.inf}, {"lr": -1.0}, {"clip": 0.0},
    {"time_budget": math.nan}, {"epochs": math.inf}, {"steps": 0}, {"batch_size": 1.5},
    {"teacher_forcing": 1.5}, {"adam_beta2": 1.0}, {"schedule": "step"},
    {"precision": "fp16"}, {"direction": "sideways"}, {"unigram_bias": "yes"},
    {"seed": -1}, {"target_valid_loss": math.nan}, {"steps": 5, "epochs": 1.0},
])
def test_every_train_value_is_checked_in_one_line(bad):
    with pytest.raises(UserError) as info:
        replace(DEFAULT, **bad)
    message = str(info.value)
    assert "\n" not in message and "--" + next(iter(bad)).replace("_", "-") in message


@pytest.mark.parametrize("make", [
    lambda: ModelConfig(dropout=math.nan), lambda: ModelConfig(dropout=1.0),
    lambda: ModelConfig(hidden_size=0), lambda: ModelConfig(attention="additive"),
    lambda: ModelConfig(vocab_size=1), lambda: PrepareConfig(valid_fraction=math.inf),
    lambda: PrepareConfig(max_length=1), lambda: PrepareConfig(oov="keep"),
    lambda: PrepareConfig(valid_fraction=0.5, test_fraction=0.5),
])
def test_model_and_data_values_are_checked(make):
    with pytest.raises(ConfigError) as info:   # a UserError and a ValueError
        make()
    assert "\n" not in str(info.value)


def test_tutorial_compat_is_one_switch():
    compat = replace(TUTORIAL, tutorial_compat=True)
    assert compat.model.tutorial_compat and not compat.data.has_unk


def _config(*argv):
    return cli.chat_train_config(cli.build_parser().parse_args(["chat", "train", "--out", "r",
                                                                *argv]))


def test_flags_replace_only_what_they_name():
    assert _config() == replace(DEFAULT, out="r")
    config = _config("--hidden-size", "64", "--max-length", "8", "--seed", "3", "--lr", "0.5")
    assert config == replace(DEFAULT, out="r", lr=0.5, seed=3,
                             model=replace(DEFAULT.model, hidden_size=64),
                             data=replace(DEFAULT.data, max_length=8, seed=3))
    assert _config("--recipe", "demo", "--steps", "7") == replace(DEMO, out="r", steps=7)
    # a time budget replaces the length; the lr decay then spans the budget (chat.train)
    budget = _config("--time-budget", "60")
    assert (budget.steps, budget.time_budget, budget.schedule_steps) == (None, 60.0, None)
    assert _config("--direction", "backward").out == "r/backward"
    with pytest.raises(UserError, match="--lr"):
        _config("--lr", "nan")
