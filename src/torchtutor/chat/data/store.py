"""The token store: a prepared split's token ids in flat files that every process memory-maps.

Per split, `{split}.tokens.bin` holds pair after pair its query ids then its reply ids, each
side ending with EOS (uint16 when the vocabulary fits, else uint32), and `{split}.offsets.bin`
(int64, 2 * pairs + 1 entries): side k (0 query, 1 reply) of pair i is
`tokens[offsets[2i + k]:offsets[2i + k + 1]]`. `store.json`, the header, says the format
version, the dtype, each split's pair and token counts and the vocabulary's hash; it is
written last, so a folder whose header names the files holds them whole (each file is written
to a temporary name, fsynced and renamed).

Nothing is read into memory up front: numpy.memmap maps the files, a batch touches only its
own pairs' pages, and processes on one machine (torchrun) share those pages in the page cache.
A `PairView` is a split seen in one direction: `forward` gives (query, reply) as stored,
`backward` swaps the two sides, so reply -> query training needs no second store.
"""

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from torchtutor.chat.data.vocab import EOS, Vocab
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import current_umask

FORMAT = 1
HEADER = "store.json"
DIRECTIONS = ("forward", "backward")
IndexedPair = tuple[list[int], list[int]]


def vocab_hash(vocab: Vocab) -> str:
    """sha256 of the index -> word table (and whether it has UNK): ids mean the same words."""
    text = json.dumps({"has_unk": vocab.has_unk, "words": vocab.index2word})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def is_store(folder: str | os.PathLike) -> bool:
    return (Path(folder) / HEADER).is_file()


# --- writing -------------------------------------------------------------------------------

class _TempFile:
    """A file written under a temporary name in `folder`; `finish()` fsyncs it and returns its
    path, for the caller to rename into place."""

    def __init__(self, folder: Path, name: str):
        fd, self.path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        self.name = name
        self.file: BinaryIO = os.fdopen(fd, "wb")
        os.fchmod(fd, 0o666 & ~current_umask())  # not mkstemp's 0600: the user's usual mode

    def finish(self) -> Path:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return Path(self.path)


class SplitWriter:
    """Appends pairs to one split's token and offsets files, chunk by chunk."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype):
        self.split = split
        self.dtype = dtype
        self.tokens = _TempFile(folder, f"{split}.tokens.bin")
        self.offsets = _TempFile(folder, f"{split}.offsets.bin")
        self.offsets.file.write(np.zeros(1, np.int64).tobytes())
        self.pairs = 0
        self.total = 0

    def append(self, ids: np.ndarray, side_lengths: np.ndarray) -> None:
        """`ids`: the sides' token ids back to back, without EOS; `side_lengths`: each side's
        length, two per pair (query, reply). EOS is appended to every side here."""
        if not len(side_lengths):
            return
        ends = np.cumsum(side_lengths)
        with_eos = np.insert(ids.astype(self.dtype, copy=False), ends, EOS)
        self.tokens.file.write(with_eos.tobytes())
        offsets = self.total + np.cumsum(side_lengths.astype(np.int64) + 1)
        self.offsets.file.write(offsets.tobytes())
        self.pairs += len(side_lengths) // 2
        self.total = int(offsets[-1])

    def finish(self) -> dict:
        """Close both files; the header entry of this split (with the temporary paths)."""
        return {"pairs": self.pairs, "tokens": self.total,
                "tokens_file": f"{self.split}.tokens.bin",
                "offsets_file": f"{self.split}.offsets.bin",
                "_tmp": {f"{self.split}.tokens.bin": str(self.tokens.finish()),
                         f"{self.split}.offsets.bin": str(self.offsets.finish())}}


def header(vocab: Vocab, dtype: np.dtype, splits: dict[str, dict]) -> dict:
    return {"format": FORMAT, "dtype": dtype.name, "vocab_size": len(vocab),
            "vocab_sha256": vocab_hash(vocab),
            "layout": "per pair: query ids, EOS, reply ids, EOS; side k of pair i is "
                      "tokens[offsets[2i+k]:offsets[2i+k+1]]",
            "splits": {name: {k: v for k, v in entry.items() if not k.startswith("_")}
                       for name, entry in splits.items()}}


# --- reading -------------------------------------------------------------------------------

def _map(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    """The file as a read-only array of `count` items (an empty file cannot be mapped)."""
    expected = count * dtype.itemsize
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UserError(f"cannot read token store file {path}: {exc.strerror}") from None
    if size != expected:
        raise UserError(f"token store file {path} has {size} bytes, its header says "
                        f"{expected}; prepare the folder again")
    if count == 0:
        return np.zeros(0, dtype)
    # A plain ndarray over the mapping: slicing a np.memmap subclass is several times slower.
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,)).view(np.ndarray)


@dataclass
class PairView:
    """One split in one direction: spans of the input side and the target side."""
    tokens: np.ndarray
    input_starts: np.ndarray
    input_ends: np.ndarray
    target_starts: np.ndarray
    target_ends: np.ndarray

    def __len__(self) -> int:
        return len(self.input_starts)

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """Input and target lengths (EOS included) of every pair; reads all the offsets."""
        return (np.asarray(self.input_ends - self.input_starts),
                np.asarray(self.target_ends - self.target_starts))

    def subset(self, indices: np.ndarray) -> "PairView":
        """The pairs at `indices` alone, as a view of the same tokens (nothing is copied
        but their offsets)."""
        return PairView(self.tokens, self.input_starts[indices], self.input_ends[indices],
                        self.target_starts[indices], self.target_ends[indices])

    def gather(self, indices) -> list[IndexedPair]:
        """The pairs at `indices`, as id lists (EOS included)."""
        tokens = self.tokens
        qs, qe, rs, re = self.input_starts, self.input_ends, self.target_starts, self.target_ends
        out = []
        for i in np.asarray(indices, dtype=np.int64).tolist():
            out.append((tokens[qs[i]:qe[i]].tolist(), tokens[rs[i]:re[i]].tolist()))
        return out


class TokenSplit:
    """One split of a store, memory-mapped."""

    def __init__(self, folder: Path, name: str, entry: dict, dtype: np.dtype):
        self.name = name
        self.folder = folder
        self.pairs = int(entry["pairs"])
        self.num_tokens = int(entry["tokens"])
        self.dtype = dtype
        self.tokens_path = folder / entry["tokens_file"]
        self.offsets_path = folder / entry["offsets_file"]
        self.tokens = _map(self.tokens_path, dtype, self.num_tokens)
        self.offsets = _map(self.offsets_path, np.dtype(np.int64), 2 * self.pairs + 1)
        if int(self.offsets[-1]) != self.num_tokens:
            raise UserError(f"token store {folder}: {name}'s offsets end at "
                            f"{int(self.offsets[-1])}, not {self.num_tokens}; prepare again")

    def __len__(self) -> int:
        return self.pairs

    def view(self, direction: str = "forward") -> PairView:
        """(query spans, reply spans) as stored, or swapped for `backward` (reply -> query)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction}")
        off = self.offsets
        query = (off[0:-1:2], off[1::2])
        reply = (off[1::2], off[2::2])
        first, second = (query, reply) if direction == "forward" else (reply, query)
        return PairView(self.tokens, *first, *second)

    def side_counts(self, side: int, vocab_size: int, chunk_pairs: int = 1 << 20) -> np.ndarray:
        """How often each id occurs on side `side` (0 query, 1 reply), EOS included.

        Read through the files in chunks, not the mapping: a scan of the whole split would
        otherwise leave every page resident in this process.
        """
        counts = np.zeros(vocab_size, np.int64)
        with open(self.offsets_path, "rb") as off_f, open(self.tokens_path, "rb") as tok_f:
            for first in range(0, self.pairs, chunk_pairs):
                n = min(chunk_pairs, self.pairs - first)
                off_f.seek(8 * 2 * first)
                off = np.fromfile(off_f, np.int64, 2 * n + 1)
                tok_f.seek(self.dtype.itemsize * int(off[0]))
                tokens = np.fromfile(tok_f, self.dtype, int(off[-1] - off[0]))
                sides = np.repeat(np.arange(2 * n) % 2 == side, np.diff(off))
                counts += np.bincount(tokens[sides], minlength=vocab_size)[:vocab_size]
        return counts


class TokenStore:
    """A prepared folder's store: the header checked against the folder's vocabulary."""

    def __init__(self, folder: str | os.PathLike, vocab: Vocab):
        self.folder = Path(folder)
        path = self.folder / HEADER
        try:
            head = json.loads(path.read_text(encoding="utf-8"))
            if head["format"] != FORMAT:
                raise ValueError(f"format {head['format']}, this version reads {FORMAT}")
            dtype = np.dtype(head["dtype"])
            if dtype not in (np.uint16, np.uint32):
                raise ValueError(f"dtype {dtype}")
            entries = dict(head["splits"])
        except FileNotFoundError:
            raise UserError(f"{self.folder} holds no token store ({HEADER}); run "
                            "`torchtutor chat prepare --out DIR` first") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"cannot read the token store header {path}: {exc}") from None
        if head.get("vocab_sha256") != vocab_hash(vocab) or head.get("vocab_size") != len(vocab):
            raise UserError(f"the token store in {self.folder} was not written with its "
                            "vocab.json; prepare the folder again")
        self.header = head
        self.dtype = dtype
        self.splits = {name: TokenSplit(self.folder, name, entry, dtype)
                       for name, entry in entries.items()}

    def split(self, name: str) -> TokenSplit:
        if name not in self.splits:
            raise UserError(f"the token store in {self.folder} has no {name} split")
        return self.splits[name]
