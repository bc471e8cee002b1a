"""The vision config: recipes are valid instances, values are checked in one line, old flat
checkpoint configs still load, and the command line only replaces what it names."""

import math
from dataclasses import replace

import pytest

from torchtutor import cli
from torchtutor.runtime.config import flatten, from_dict, to_dict
from torchtutor.runtime.errors import UserError
from torchtutor.vision.config import (
    FAST,
    RECIPES,
    TUTORIAL,
    DataConfig,
    ModelConfig,
    TrainConfig,
    config_from_saved,
)


def test_recipes_round_trip_and_name_their_model():
    for name, recipe in RECIPES.items():
        assert recipe.recipe == name == recipe.model.name
        assert from_dict(TrainConfig, to_dict(recipe)) == recipe
    assert FAST == TrainConfig()
    assert (TUTORIAL.batch_size, TUTORIAL.lr, TUTORIAL.momentum, TUTORIAL.lookahead) == \
        (4, 0.001, 0.9, False)


@pytest.mark.parametrize("bad", [{"lr": math.nan}, {"epochs": math.inf}, {"momentum": 1.0},
                                 {"batch_size": 0}, {"schedule": "cosine"},
                                 {"time_budget": -1.0}, {"precision": "int8"}])
def test_values_are_checked_in_one_line(bad):
    with pytest.raises(UserError) as info:
        replace(FAST, **bad)
    assert "\n" not in str(info.value) and "--" + next(iter(bad)).replace("_", "-") \
        in str(info.value)
    for make in (lambda: ModelConfig(name="resnet"), lambda: DataConfig(valid_fraction=1.0),
                 lambda: ModelConfig(widths=[8, 8])):
        with pytest.raises(UserError):
            make()


def test_an_old_flat_checkpoint_config_loads():
    old = {**{k: v for k, v in flatten(to_dict(TUTORIAL)).items() if "." not in k},
           "data": "/some/tree", "model": "tutorial", "widths": None, "valid_fraction": 0.2,
           "extra": {"resume": False}, "out": "x"}
    config = config_from_saved(old, "checkpoint.pt")
    assert config == replace(TUTORIAL, out="x", data=DataConfig("/some/tree", 0.2))


def _config(*argv):
    return cli.vision_train_config(cli.build_parser().parse_args(
        ["vision", "train", "--out", "r", *argv]))


def test_flags_replace_only_what_they_name():
    assert _config() == replace(FAST, out="r")
    assert _config("--model", "tutorial") == replace(TUTORIAL, out="r")
    config = _config("--model", "tutorial", "--recipe", "fast", "--data", "tree", "--lr", "0.1")
    assert config == replace(FAST, out="r", lr=0.1, model=ModelConfig("tutorial"),
                             data=DataConfig("tree"))
    assert _config("--time-budget", "30").plan_from_budget
    assert not _config("--time-budget", "30", "--epochs", "2").plan_from_budget
