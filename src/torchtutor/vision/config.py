"""The classifier's configuration: the model, the data and the training run, and the recipes.

`vision train` takes one `TrainConfig`, which nests the `ModelConfig` (which net) and the
`DataConfig` (which images). The dataclass defaults ARE the fast recipe; `TUTORIAL` changes
only what the notes do differently, so each value is defined once. `__post_init__` checks
every value with a one-line error, by the same rules as the chat app (runtime/config.py).
Kept free of torch.
"""

from dataclasses import dataclass, field, replace
from typing import Any

from torchtutor.runtime.config import (
    ConfigError,
    check_bool,
    check_choice,
    checked,
    count,
    fraction,
    from_dict,
    positive,
)
from torchtutor.runtime.options import check_range, check_seed

MODEL_NAMES = ("tutorial", "fast")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("constant", "warmup_linear")


@dataclass
class ModelConfig:
    name: str = "fast"                 # tutorial: the notes' net; fast: airbench-style
    widths: list[int] | None = None    # the fast net's block widths (None: 64, 256, 256)

    def __post_init__(self) -> None:
        check_choice("model", self.name, MODEL_NAMES)
        if self.widths is not None:
            if not isinstance(self.widths, (list, tuple)) or len(self.widths) != 3:
                raise ConfigError(f"--widths must be three block widths, not {self.widths!r}")
            for width in self.widths:
                count("widths", width)
            self.widths = list(self.widths)


@dataclass
class DataConfig:
    source: str = "cifar10"            # 'cifar10', a CIFAR-10 archive or folder, an image tree
    valid_fraction: float = 0.1        # a single image folder: the share held out for testing

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ConfigError(f"--data must name a data set, not {self.source!r}")
        fraction("valid_fraction", self.valid_fraction)


@dataclass
class TrainConfig:
    """`vision train`. The defaults are the fast recipe: airbench's (Keller Jordan's CIFAR-10
    speed runs), in mean-loss terms: label smoothing 0.2, Nesterov SGD momentum 0.85 at batch
    1024 with lr 1.5 and weight decay 1.33e-3 (airbench's 11.5 per 1024 summed examples and
    0.0153 decoupled), 64x the rate for batch-norm shifts, linear warm-up from 20% over 23% of
    the run then linear decay to 7%, the whitening layer's bias trained for 3 epochs only,
    lookahead averaging, random crops and flips on the device, and mirror plus one-pixel-shift
    test-time augmentation.
    """
    out: str = ""                      # the run folder (required to train)
    recipe: str = "fast"               # the recipe these values started from (RECIPES)
    epochs: float = 10
    batch_size: int = 1024
    lr: float = 1.5
    momentum: float = 0.85
    nesterov: bool = True
    weight_decay: float = 1.33e-3
    label_smoothing: float = 0.2
    warmup: float = 0.23               # share of the run warming up
    warmup_start: float = 0.2          # the rate at step 0, as a fraction of `lr`
    final_lr: float = 0.07             # the rate at the end, as a fraction of `lr`
    schedule: str = "warmup_linear"    # constant | warmup_linear
    bias_lr_scale: float = 64.0        # batch-norm shifts train at this multiple of the rate
    whiten_bias_epochs: float | None = 3.0   # None: the whitening bias trains throughout
    lookahead: bool = True
    augment: bool = True               # random crops and flips
    tta: bool = True                   # test on the mirror image too
    tta_translate: bool = True         # and on one-pixel shifts (needs `tta`)
    time_budget: float | None = None   # seconds of training; then it stops and tests
    plan_from_budget: bool = False     # fit the schedule to the budget (the epochs follow)
    precision: str = "auto"            # auto | fp32 | bf16 | fp16 (autocast)
    seed: int = 0
    device: str = "auto"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.out, str):
            raise ConfigError(f"--out must be a folder name, not {self.out!r}")
        check_choice("recipe", self.recipe, tuple(RECIPE_NAMES))
        positive("epochs", self.epochs)
        count("batch_size", self.batch_size)
        positive("lr", self.lr)
        checked(check_range, "momentum", self.momentum, 0, 1, False, True)
        check_bool("nesterov", self.nesterov)
        checked(check_range, "weight_decay", self.weight_decay, 0)
        fraction("label_smoothing", self.label_smoothing)
        fraction("warmup", self.warmup)
        checked(check_range, "warmup_start", self.warmup_start, 0, 1)
        checked(check_range, "final_lr", self.final_lr, 0, 1)
        check_choice("schedule", self.schedule, SCHEDULES)
        positive("bias_lr_scale", self.bias_lr_scale)
        if self.whiten_bias_epochs is not None:
            checked(check_range, "whiten_bias_epochs", self.whiten_bias_epochs, 0)
        for name in ("lookahead", "augment", "tta", "tta_translate", "plan_from_budget"):
            check_bool(name, getattr(self, name))
        positive("time_budget", self.time_budget, optional=True)
        check_choice("precision", self.precision, PRECISIONS)
        checked(check_seed, "seed", self.seed)
        if not isinstance(self.device, str):
            raise ConfigError(f"--device must be a device name, not {self.device!r}")
        if not isinstance(self.model, ModelConfig) or not isinstance(self.data, DataConfig):
            raise ConfigError("model and data must be a ModelConfig and a DataConfig")


RECIPE_NAMES = ("tutorial", "fast")

FAST = TrainConfig()

# The notes: cross-entropy, SGD lr 0.001 momentum 0.9, batch 4, 2 epochs, no augmentation, their
# net, a constant rate.
TUTORIAL = replace(FAST, recipe="tutorial", model=ModelConfig(name="tutorial"), epochs=2,
                   batch_size=4, lr=0.001, momentum=0.9, nesterov=False, weight_decay=0.0,
                   label_smoothing=0.0, warmup=0.0, warmup_start=0.1, final_lr=0.0,
                   schedule="constant", bias_lr_scale=1.0, whiten_bias_epochs=None,
                   lookahead=False, augment=False, tta=False, tta_translate=False)

RECIPES = {"tutorial": TUTORIAL, "fast": FAST}


def config_from_saved(saved: dict[str, Any], source: str) -> TrainConfig:
    """The TrainConfig a checkpoint holds; older checkpoints held it flat ("model": "fast",
    "data": PATH, "widths", "valid_fraction", "extra")."""
    saved = dict(saved)
    if not isinstance(saved.get("model"), dict):
        saved["model"] = {"name": saved.get("model", "fast"), "widths": saved.pop("widths", None)}
    if not isinstance(saved.get("data"), dict):
        saved["data"] = {"source": saved.get("data", ""),
                         "valid_fraction": saved.pop("valid_fraction", 0.1)}
    return from_dict(TrainConfig, saved, source=source, strict=False)
