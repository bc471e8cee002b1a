"""The data `chat train` reads: a prepared folder's token store, memory-mapped.

`--data PREPARED_DIR` (a folder written by `chat prepare`) is read in place with the
vocabulary, splits and settings it was prepared with. Any other corpus is prepared first, by
rank 0 alone under torchrun, into RUN_DIR/data (the store and the split TSVs, not the raw
pairs), and a resumed run reads that folder again rather than the corpus. Either way every
process maps the same files, so N processes on one machine share one copy in the page cache.
"""

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from torchtutor.chat.data.prepare import PrepareConfig, prepare_folder, prepared_config
from torchtutor.chat.data.store import TokenSplit, TokenStore, is_store
from torchtutor.chat.data.vocab import Vocab
from torchtutor.runtime import distributed as ddp
from torchtutor.runtime.errors import UserError

RUN_DATA = "data"   # RUN_DIR/data: where a corpus that is not a prepared folder is prepared


@dataclass
class TrainingData:
    config: PrepareConfig      # the settings the data was prepared with
    folder: Path               # the prepared folder that is mapped
    vocab: Vocab
    store: TokenStore

    def split(self, name: str) -> TokenSplit:
        return self.store.split(name)

    def target_counts(self, direction: str = "forward") -> np.ndarray:
        """How often each id is a target token of the training split (EOS included): the
        replies, or the queries when training backward (reply -> query)."""
        side = 1 if direction == "forward" else 0
        return self.split("train").side_counts(side, len(self.vocab))


def _open(folder: Path, config: PrepareConfig) -> TrainingData:
    vocab = Vocab.load(folder / "vocab.json")
    return TrainingData(config=config, folder=folder, vocab=vocab,
                        store=TokenStore(folder, vocab))


def open_training_data(config: PrepareConfig, run_dir: str | os.PathLike, resume: bool,
                       ctx: ddp.DistContext | None = None) -> TrainingData:
    """The store to train on (see the module doc); `config.corpus` names the corpus."""
    ctx = ctx or ddp.DistContext()
    corpus = Path(config.corpus).expanduser()
    prepared = prepared_config(corpus) if corpus.is_dir() else None
    if prepared is not None:
        return _open(corpus, prepared)
    if corpus.is_dir() and (corpus / "vocab.json").is_file() and (corpus / "stats.json").is_file():
        raise UserError(f"{corpus} was prepared by an older torchtutor (no token store); "
                        "run `torchtutor chat prepare` on its corpus again")
    folder = Path(run_dir) / RUN_DATA
    if not (resume and is_store(folder)):
        failure = None
        if ctx.is_main:
            try:
                prepare_folder(config, folder, pairs_file=False)
            except UserError as exc:
                failure = exc
        # Every rank waits for rank 0's files; a failure there stops all of them, not just one.
        failed = ddp.all_reduce_sum([float(failure is not None)], ctx)[0]
        if failure is not None:
            raise failure
        if failed:
            raise UserError("rank 0 could not prepare the data (its error says why)")
    return _open(folder, replace(config))


def data_of_run(run_dir: str | os.PathLike, config: PrepareConfig) -> PrepareConfig:
    """`config`, pointed at RUN_DIR/data when the run prepared its corpus there (a second
    model on the same data, the backward one, maps those files instead of preparing again)."""
    folder = Path(run_dir) / RUN_DATA
    return replace(config, corpus=str(folder)) if is_store(folder) else config
