"""The chatbot's configuration: the model, the data and the training run, and the recipes.

One typed config per command, resolved once: `chat train` takes a `TrainConfig`, which nests
the `ModelConfig` (the network) and the `PrepareConfig` (corpus to splits). A recipe is an
instance: the dataclass defaults ARE the default recipe, `TUTORIAL` and `DEMO` change only what
differs, so `grep` finds each value in one place. `cli.py` applies flags with
`dataclasses.replace`; a config file the same way. Every `__post_init__` checks its values
with a one-line error (NaN and infinity refused). Kept free of torch, so `--help` stays fast.
"""

from dataclasses import dataclass, field, replace

from torchtutor.runtime.config import (
    ConfigError,
    check_bool,
    check_choice,
    checked,
    count,
    fraction,
    positive,
)
from torchtutor.runtime.options import check_count, check_range, check_seed

ATTENTION_METHODS = ("dot", "general", "concat")
OOV_POLICIES = ("drop", "unk")
PRECISIONS = ("auto", "fp32", "bf16")
SCHEDULES = ("constant", "cosine", "linear")
DIRECTIONS = ("forward", "backward")
# The longest sentence limit: decoding runs up to max_length steps when no EOS comes, so a
# run folder saying 10**9 would never answer.
MAX_LENGTH = 1000


@dataclass
class ModelConfig:
    """The network (chat.model): a shared embedding, a bidirectional GRU encoder, Luong
    attention and a GRU decoder. The notes' sizes."""
    vocab_size: int = 0            # 0 in a recipe: training sets it from the vocabulary
    hidden_size: int = 500
    encoder_layers: int = 2
    decoder_layers: int = 2
    attention: str = "dot"         # dot | general | concat (Luong's scores)
    dropout: float = 0.1
    tutorial_compat: bool = False  # the notes' attention over padding and first-slice start

    def __post_init__(self) -> None:
        check_choice("attention", self.attention, ATTENTION_METHODS)
        if self.vocab_size != 0:   # PAD and SOS (chat.data.vocab) and at least one word
            count("vocab_size", self.vocab_size, 2)
        count("hidden_size", self.hidden_size)
        count("encoder_layers", self.encoder_layers)
        count("decoder_layers", self.decoder_layers)
        fraction("dropout", self.dropout)
        check_bool("tutorial_compat", self.tutorial_compat)
        if self.tutorial_compat and self.decoder_layers > 2 * self.encoder_layers:
            # encoder_hidden[:decoder_layers] has only 2 * encoder_layers slices to give
            raise ConfigError("--tutorial-compat needs --decoder-layers at most twice "
                              "--encoder-layers")


@dataclass
class PrepareConfig:
    """Corpus -> normalized pairs -> vocabulary -> splits (chat.data.prepare). The notes' filter."""
    corpus: str = "chatterbot"     # chatterbot | cornell | a path (see chat.data.corpus)
    max_length: int = 10           # keep pairs whose sides have fewer words than this
    min_count: int = 3             # trim words seen fewer times
    oov: str = "drop"              # pairs with trimmed words: drop them (the notes) or UNK
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0                  # the split's shuffle
    has_unk: bool = True           # the vocabulary has UNK (the notes' has not)

    def __post_init__(self) -> None:
        if not isinstance(self.corpus, str) or not self.corpus:
            raise ConfigError(f"--data must name a corpus, not {self.corpus!r}")
        check_choice("oov", self.oov, OOV_POLICIES)
        if self.oov == "unk" and not self.has_unk:
            raise ConfigError("--oov unk needs a vocabulary with UNK")
        checked(check_count, "max_length", self.max_length, 2, MAX_LENGTH)   # a word + EOS
        count("min_count", self.min_count, 0)
        fraction("valid_fraction", self.valid_fraction)
        fraction("test_fraction", self.test_fraction)
        if self.valid_fraction + self.test_fraction >= 1.0:
            raise ConfigError("--valid-fraction and --test-fraction leave nothing to train on")
        checked(check_seed, "seed", self.seed)
        check_bool("has_unk", self.has_unk)


@dataclass
class TrainConfig:
    """`chat train`. The defaults are the default recipe: the notes' architecture, sizes and
    encoder lr, and what measured best on Cornell at one CPU thread (bench/RESULTS.md): batch
    128, bf16 autocast where the hardware is fast at it (AMX/AVX512-BF16 CPUs, recent GPUs),
    the whole-sequence decoder, the output bias started at the replies' log word frequencies,
    a decoder lr 30x (not the notes' 5x) the encoder's, decaying linearly to 5% over 450 steps
    (1.7 epochs of Cornell), then a backward model (reply -> query) with the same recipe into
    RUN_DIR/backward, which the default decoder reranks with (chat.infer.rerank). Raising the
    encoder's lr, clipping harder, Adam beta2 0.98, a smaller embedding init, a larger
    output-layer lr, batch 64 or 256 all measured the same or worse.
    """
    out: str = ""                        # the run folder (required to train)
    recipe: str = "default"              # the recipe these values started from (RECIPES)
    # The notes' exact semantics: per-step-mean loss sum, attention over padding, no UNK,
    # step-by-step decoding; it sets `model.tutorial_compat` and `data.has_unk` to match.
    tutorial_compat: bool = False
    steps: int | None = 450              # optimizer steps; None: --epochs or the time budget
    epochs: float | None = None          # passes over the training pairs (sets the steps)
    time_budget: float | None = None     # seconds of training (evaluation and saving excluded)
    schedule_steps: int | None = None    # the lr decay's horizon; None: the run's steps
    batch_size: int = 128                # pairs per step (per process under torchrun)
    lr: float = 1e-4                     # encoder (and embedding) learning rate
    decoder_lr_ratio: float = 30.0       # decoder lr = lr * this
    clip: float = 50.0                   # gradient norm clip, per optimizer's parameters
    adam_beta2: float = 0.999            # Adam's second-moment decay
    unigram_bias: bool = True            # start the output bias at the replies' log unigram
    teacher_forcing: float = 1.0         # share of batches (or steps) fed the true token
    teacher_forcing_per_step: bool = False   # decide at every step, not once per batch
    warmup_steps: int = 0                # linear lr warm-up
    schedule: str = "linear"             # constant | cosine | linear (after the warm-up)
    bucket: bool = False                 # batch pairs of similar length together
    precision: str = "auto"              # fp32 | bf16 (autocast) | auto (bf16 where fast)
    eval_every: int = 250                # steps between validation losses
    # Pairs of the valid split each validation scores: a sample drawn once by seed and saved
    # in the run folder, so its cost does not grow with the corpus; 0: the whole split.
    valid_pairs: int = 3000
    checkpoint_every: int = 250          # steps between saves of last.pt
    seed: int = 0
    device: str = "auto"
    target_valid_loss: float | None = None   # stop once the validation loss is at most this
    patience: int | None = None          # stop after this many evaluations without a better one
    keep_checkpoints: int = 1            # latest saves kept: last.pt and K-1 last-STEP.pt
    direction: str = "forward"           # forward: query -> reply; backward: reply -> query
    backward: bool = True                # after a forward run, train RUN_DIR/backward too
    model: ModelConfig = field(default_factory=ModelConfig)
    data: PrepareConfig = field(default_factory=PrepareConfig)

    def __post_init__(self) -> None:
        # First: the lines below read the nested configs (a file's `model: 5` gets here).
        if not isinstance(self.model, ModelConfig) or not isinstance(self.data, PrepareConfig):
            raise ConfigError("model and data must be a ModelConfig and a PrepareConfig")
        check_bool("tutorial_compat", self.tutorial_compat)
        # One switch: the model's and the vocabulary's compat settings follow it.
        if self.model.tutorial_compat != self.tutorial_compat:
            self.model = replace(self.model, tutorial_compat=self.tutorial_compat)
        if self.tutorial_compat and self.data.has_unk:
            self.data = replace(self.data, has_unk=False)
        if not isinstance(self.out, str):
            raise ConfigError(f"--out must be a folder name, not {self.out!r}")
        check_choice("recipe", self.recipe, tuple(RECIPE_NAMES))
        if self.steps is not None:
            count("steps", self.steps)
        positive("epochs", self.epochs, optional=True)
        positive("time_budget", self.time_budget, optional=True)
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("give --steps or --epochs, not both")
        if self.schedule_steps is not None:
            count("schedule_steps", self.schedule_steps)
        count("batch_size", self.batch_size)
        positive("lr", self.lr)
        positive("decoder_lr_ratio", self.decoder_lr_ratio)
        positive("clip", self.clip)
        checked(check_range, "adam_beta2", self.adam_beta2, 0, 1, False, True)
        check_bool("unigram_bias", self.unigram_bias)
        checked(check_range, "teacher_forcing", self.teacher_forcing, 0, 1)
        check_bool("teacher_forcing_per_step", self.teacher_forcing_per_step)
        count("warmup_steps", self.warmup_steps, 0)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_bool("bucket", self.bucket)
        check_choice("precision", self.precision, PRECISIONS)
        count("eval_every", self.eval_every)
        if self.valid_pairs == "all":   # a config file's spelling of the whole split
            self.valid_pairs = 0
        count("valid_pairs", self.valid_pairs, 0)
        count("checkpoint_every", self.checkpoint_every)
        checked(check_seed, "seed", self.seed)
        if not isinstance(self.device, str):
            raise ConfigError(f"--device must be a device name, not {self.device!r}")
        if self.target_valid_loss is not None:
            checked(check_range, "target_valid_loss", self.target_valid_loss)
        if self.patience is not None:
            count("patience", self.patience)
        count("keep_checkpoints", self.keep_checkpoints)
        check_choice("direction", self.direction, DIRECTIONS)
        check_bool("backward", self.backward)


RECIPE_NAMES = ("default", "tutorial", "demo")

DEFAULT = TrainConfig()

# The notes' settings: their model and optimizer, 4000 iterations of batch 64, the decoder at
# 5x the encoder's lr, a constant rate, float32, no backward model.
TUTORIAL = replace(DEFAULT, recipe="tutorial", steps=4000, batch_size=64, decoder_lr_ratio=5.0,
                   unigram_bias=False, schedule="constant", precision="fp32", eval_every=500,
                   checkpoint_every=500, backward=False)

# `torchtutor demo`: the bundled ChatterBot corpus is tiny (about 2,300 pairs), so the demo
# keeps rarer words and slightly longer sentences, holds nothing out (the point is to chat;
# `chat evaluate` is for measuring), and uses a smaller model with a larger, warmed-up,
# cosine-decayed rate that learns the greetings in a couple of minutes on two cores.
DEMO = replace(DEFAULT, recipe="demo", steps=900, batch_size=64, lr=2e-3, decoder_lr_ratio=1.0,
               clip=1.0, unigram_bias=False, warmup_steps=50, schedule="cosine", bucket=True,
               precision="fp32", eval_every=150, checkpoint_every=150,
               model=replace(DEFAULT.model, hidden_size=256),
               data=replace(DEFAULT.data, max_length=12, min_count=1, valid_fraction=0.0,
                            test_fraction=0.0))

RECIPES = {"default": DEFAULT, "tutorial": TUTORIAL, "demo": DEMO}

