r"""Corpus readers: conversations in, consecutive (query, reply) pairs out.

Formats: Cornell Movie-Dialogs in its original ` +++$+++ ` files (iso-8859-1) or as ConvoKit
`utterances.jsonl`; the ChatterBot YAML corpus (bundled, the default); our pair file, plain or
gzip'ed; and JSON lines (`{"query": ..., "reply": ...}` or `{"dialog": [...]}` a line, plain
or gzip'ed). Every reader keeps each valid pair and counts what it skipped, by reason, in
`skipped`; `load_corpus` fails with one line only when no pair is left.

`open_corpus` streams: pair files and JSON lines are read a line at a time, so a corpus larger
than memory passes through in bounded memory. Cornell and ConvoKit need a join (line ids to
texts, utterances to conversations) and hold the one corpus's texts while they read it.

The pair file is UTF-8, one pair a line: `query<TAB>reply[<TAB>conversation]`. Inside a
field a backslash is written `\\`, a tab `\t`, a newline `\n` and a carriage return `\r`, so
any text round-trips exactly (quotes need no escaping). A reader meeting a backslash before
any other character keeps both characters. Without the third field each line is its own
conversation.
"""

import gzip
import importlib.resources
import itertools
import json
import os
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import yaml

from torchtutor.runtime.download import cache_dir, cached_download, sha256_of
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write_bytes, atomic_write_text

CORNELL_URL = "http://www.cs.cornell.edu/~cristian/data/cornell_movie_dialogs_corpus.zip"
# The sha256 of the official zip as registered for this URL by the Julia DataDeps package of
# the corpus (a file checksum; it could not be recomputed here without network).
# TORCHTUTOR_CORNELL_SHA256 overrides it should the file ever be republished.
CORNELL_SHA256: str | None = "3bde8a571f615201bc2d2453e22878090719638592f774720eddec739de8c900"
CORNELL_HINT = ("download it yourself from " + CORNELL_URL + " and pass --data "
                "/path/to/cornell_movie_dialogs_corpus.zip (or the unpacked folder with "
                "movie_lines.txt and movie_conversations.txt)")

_SEP = " +++$+++ "
_LINE_IDS = re.compile(r"[^\[\]'\",\s]+")


@dataclass(slots=True)
class Pair:
    query: str
    reply: str
    conversation: str


@dataclass
class Corpus:
    name: str
    pairs: list[Pair]
    skipped: dict[str, int] = field(default_factory=dict)


class PairStream:
    """A corpus read lazily: iterate it once, a pair at a time or a list at a time (`lists`);
    `skipped` is complete when the iteration ends. `read` yields pairs, or with `in_lists`
    lists of pairs (a reader that parses a block of lines at once)."""

    def __init__(self, name: str, read: Callable[[Counter], Iterator], in_lists: bool = False):
        self.name = name
        self.counts: Counter = Counter()
        self._read = read
        self._in_lists = in_lists

    def __iter__(self) -> Iterator[Pair]:
        if self._in_lists:
            return itertools.chain.from_iterable(self._read(self.counts))
        return self._read(self.counts)

    def lists(self, size: int) -> Iterator[list[Pair]]:
        """The pairs in lists: the reader's own (one block of its file), else `size` a list."""
        if self._in_lists:
            return self._read(self.counts)
        return chunked(self._read(self.counts), size)

    @property
    def skipped(self) -> dict[str, int]:
        return _nonzero(self.counts)

    def to_corpus(self) -> Corpus:
        pairs = list(self)
        return Corpus(self.name, pairs, self.skipped)


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """`items` in lists of `size` (the last may be shorter)."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _consecutive_pairs(conversation: str, texts: list[str | None], pairs: list[Pair],
                       skipped: Counter) -> None:
    """Append (line i, line i+1) pairs from stripped texts; None marks a missing line."""
    for query, reply in zip(texts, texts[1:], strict=False):
        if query is None or reply is None:
            continue
        if query and reply:
            pairs.append(Pair(query, reply, conversation))
        else:
            skipped["pairs_with_empty_side"] += 1


def _count_bad_rows(rows: list[list[str]], good: int, skipped: Counter, reason: str) -> None:
    if good < len(rows):
        blank = sum(1 for row in rows if len(row) == 1 and not row[0].strip())
        skipped["blank_lines"] += blank
        skipped[reason] += len(rows) - good - blank


def _lines(text):
    """Lines split on LF only (other line breaks may sit inside a text); the newline that ends
    the last line does not make an extra blank line."""
    sep = b"\n" if isinstance(text, bytes) else "\n"
    lines = text.split(sep)
    if not lines[-1]:
        lines.pop()
    return lines


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None


# --- Cornell, original format ---------------------------------------------------------------

def _decode_cornell(raw: bytes) -> str:
    """The corpus is iso-8859-1, but copies re-saved as UTF-8 circulate (with CRLF, which the
    field splitting and stripping absorb). Real latin-1 text with accents is almost never
    valid UTF-8, so a file that decodes as UTF-8 is taken as UTF-8; else iso-8859-1, which
    decodes any byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("iso-8859-1")


def read_cornell(folder: str | os.PathLike) -> Corpus:
    """`movie_lines.txt` + `movie_conversations.txt`: fields split on ` +++$+++ `, latin-1."""
    return _cornell_stream(Path(folder)).to_corpus()


def _cornell_stream(folder: Path) -> PairStream:
    return PairStream(f"cornell:{folder}", lambda skipped: _cornell_pairs(folder, skipped))


def _cornell_pairs(folder: Path, skipped: Counter) -> Iterator[Pair]:
    raw = _read_bytes(folder / "movie_lines.txt", "Cornell lines file")
    skipped["empty_files"] += not raw
    # One list comprehension per step: this file has a quarter of a million lines.
    rows = [line.split(_SEP) for line in _lines(_decode_cornell(raw))]
    good = [row for row in rows if len(row) == 5]
    _count_bad_rows(rows, len(good), skipped, "lines_with_wrong_field_count")
    # Texts are stripped once here (the notes strip each side of each pair).
    texts = {row[0]: row[4].strip() for row in good}
    skipped["duplicate_line_ids"] += len(good) - len(texts)

    raw = _read_bytes(folder / "movie_conversations.txt", "Cornell conversations file")
    skipped["empty_files"] += not raw
    rows = [line.split(_SEP) for line in _lines(_decode_cornell(raw))]
    good = [row for row in rows if len(row) == 4]
    _count_bad_rows(rows, len(good), skipped, "conversations_with_wrong_field_count")
    del rows
    get = texts.get
    for row in good:
        ids = _LINE_IDS.findall(row[3])
        if not ids:
            skipped["conversations_without_line_ids"] += 1
            continue
        found = [get(i) for i in ids]
        skipped["missing_line_ids"] += found.count(None)
        # ConvoKit names a conversation by its first line; do the same so both formats split
        # alike.
        pairs: list[Pair] = []
        _consecutive_pairs(ids[0], found, pairs, skipped)
        yield from pairs


# --- Cornell, ConvoKit format ---------------------------------------------------------------

def _utterance_order(utt: dict) -> tuple:
    """Sort key inside a conversation: timestamp when given, then the number in the id, then
    reversed file order (ConvoKit lists a conversation newest first, and the notes' reader
    reverses it)."""
    ts = utt.get("timestamp")
    m = re.search(r"(\d+)$", utt["id"])
    return (ts if isinstance(ts, int | float) else float("-inf"),
            int(m.group(1)) if m else -1, -utt["_position"])


def read_convokit(path: str | os.PathLike) -> Corpus:
    """ConvoKit `utterances.jsonl`: one JSON object a line with id, conversation_id, text.

    Utterances are grouped by conversation_id and put in time order: by timestamp, else by
    the number in the id (how the Cornell ids run), else newest-first file order reversed as
    the notes do. `reply-to` is not needed for that and is not read.
    """
    path = Path(path)
    skipped: Counter = Counter()
    conversations: dict[str, list[dict]] = {}
    seen: set[str] = set()
    raw = _read_bytes(path, "ConvoKit utterances file")
    skipped["empty_files"] += not raw
    for _, utt in _json_records(enumerate(_lines(raw), 1), skipped):
        if not (isinstance(utt, dict) and isinstance(utt.get("id"), str)
                and isinstance(utt.get("conversation_id"), str)
                and isinstance(utt.get("text"), str)):
            skipped["lines_with_wrong_fields"] += 1
            continue
        if utt["id"] in seen:
            skipped["duplicate_line_ids"] += 1
            continue
        seen.add(utt["id"])
        utt["_position"] = len(seen)
        conversations.setdefault(utt["conversation_id"], []).append(utt)
    pairs: list[Pair] = []
    for conv_id, utts in conversations.items():
        utts.sort(key=_utterance_order)
        _consecutive_pairs(conv_id, [u["text"].strip() for u in utts], pairs, skipped)
    return Corpus(f"convokit:{path}", pairs, _nonzero(skipped))


def _json_records(lines: Iterable[tuple[int, bytes]], skipped: Counter,
                  ) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON) of each line that is JSON; the others are counted."""
    for number, line in lines:
        if not line.strip():
            skipped["blank_lines"] += 1
            continue
        try:
            record = json.loads(line)
        except UnicodeDecodeError:
            skipped["undecodable_lines"] += 1
            continue
        except ValueError:
            skipped["lines_not_json"] += 1
            continue
        yield number, record


# --- ChatterBot YAML ------------------------------------------------------------------------

def chatterbot_english_dir() -> Path:
    """The English YAML files of the installed `chatterbot-corpus` package."""
    return Path(str(importlib.resources.files("chatterbot_corpus") / "data" / "english"))


def read_chatterbot(path: str | os.PathLike) -> Corpus:
    """A ChatterBot YAML file, or a folder of them: `conversations:` lists of utterances."""
    path = Path(path)
    files = sorted(path.glob("*.yml")) + sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    skipped: Counter = Counter()
    pairs: list[Pair] = []
    loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)   # every scalar stays a string
    for file in files:
        raw = _read_bytes(file, "ChatterBot file")
        if not raw.strip():
            skipped["empty_files"] += 1
            continue
        try:
            doc = yaml.load(raw.decode("utf-8"), Loader=loader)
        except UnicodeDecodeError:
            skipped["undecodable_files"] += 1
            continue
        except yaml.YAMLError:
            skipped["files_not_yaml"] += 1
            continue
        convs = doc.get("conversations") if isinstance(doc, dict) else None
        if not isinstance(convs, list):
            skipped["files_without_conversations"] += 1
            continue
        for n, conv in enumerate(convs):
            if not (isinstance(conv, list) and all(isinstance(t, str) for t in conv)):
                skipped["conversations_not_a_list_of_texts"] += 1
                continue
            _consecutive_pairs(f"{file.stem}:{n}", [t.strip() for t in conv], pairs, skipped)
    return Corpus(f"chatterbot:{path}", pairs, _nonzero(skipped))


# --- the pair file ------------------------------------------------------------------------

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def escape_field(text: str) -> str:
    # Checking first skips translate's slow (one-to-many) path for the usual clean text.
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.translate(_ESCAPES)
    return text


def unescape_field(text: str) -> str:
    if "\\" not in text:
        return text
    return _ESCAPED.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(0)), text)


def write_pairs_file(path: str | os.PathLike, pairs, with_conversation: bool = False) -> None:
    """Write `Pair`s or (query, reply) tuples as the escaped tab-separated pair file."""
    rows = []
    for p in pairs:
        query, reply, conv = ((p.query, p.reply, p.conversation) if isinstance(p, Pair)
                              else (p[0], p[1], ""))
        row = escape_field(query) + "\t" + escape_field(reply)
        if with_conversation:
            row += "\t" + escape_field(conv)
        rows.append(row + "\n")
    atomic_write_text(path, "".join(rows))


def read_pairs_file(path: str | os.PathLike) -> Corpus:
    """Read a pair file (see the module doc), plain or gzip'ed; bad lines are skipped and
    counted."""
    return pairs_file_stream(Path(path)).to_corpus()


def pairs_file_stream(path: Path) -> PairStream:
    return PairStream(f"pairs:{path}", lambda skipped: _pairs_file_lists(path, skipped),
                      in_lists=True)


_GZIP_MAGIC = b"\x1f\x8b"


def _open_lines(path: Path, what: str) -> BinaryIO:
    """The file for reading bytes, through gzip when it starts with gzip's magic number."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (the caller closes it)
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None
    if f.read(2) == _GZIP_MAGIC:
        f.seek(0)
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    f.seek(0)
    return f


_BLOCK_BYTES = 1 << 22   # read 4 MB at a time: per-line reads and decodes cost more than parsing
# No pair or record is this long: a longer line means the file is not one of pairs (binary
# data), and reading on would hold it all in memory.
MAX_LINE_BYTES = 1 << 24


def _line_blocks(path: Path, what: str, skipped: Counter) -> Iterator[tuple[int, bytes]]:
    """(number of the first line, whole lines joined by LF, the last LF dropped) of a plain or
    gzip'ed file, about 4 MB at a time; a line longer than that comes whole in one block."""
    number = 0
    try:
        with _open_lines(path, what) as f:
            parts: list[bytes] = []   # a line so far, when a read ended inside it
            while block := f.read(_BLOCK_BYTES):
                cut = block.rfind(b"\n")
                if cut < 0:
                    parts.append(block)
                else:
                    whole = b"".join((*parts, block[:cut])) if parts else block[:cut]
                    parts = [block[cut + 1:]] if cut + 1 < len(block) else []
                    yield number + 1, whole
                    number += whole.count(b"\n") + 1
                if sum(map(len, parts)) > MAX_LINE_BYTES:
                    raise UserError(f"{what} {path}: line {number + 1} is longer than "
                                    f"{MAX_LINE_BYTES:,} bytes; is it a text file of pairs?")
            if parts:
                yield number + 1, b"".join(parts)
                number += 1
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"cannot read {what} {path} after line {number}: "
                        f"{getattr(exc, 'strerror', None) or exc}") from None
    skipped["empty_files"] += number == 0


def _numbered_lines(path: Path, what: str, skipped: Counter) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the LF) of a plain or gzip'ed file, one at a time."""
    for first, block in _line_blocks(path, what, skipped):
        yield from enumerate(block.split(b"\n"), first)


def _pairs_file_lists(path: Path, skipped: Counter) -> Iterator[list[Pair]]:
    for first, block in _line_blocks(path, "pair file", skipped):
        try:   # a block at once: the usual case, all UTF-8
            lines: list[str | None] = block.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            lines = [_utf8_or_none(raw) for raw in block.split(b"\n")]
        if first == 1 and lines[0] is not None and lines[0].startswith("\ufeff"):
            lines[0] = lines[0][1:]
        yield _parse_pair_lines(first, lines, b"\r" in block, skipped)


def _utf8_or_none(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _parse_pair_lines(first: int, lines: list[str | None], crlf: bool,
                      skipped: Counter) -> list[Pair]:
    # The usual line (two or three fields, no escapes, no CR) passes the fewest checks.
    pairs = []
    keep = pairs.append
    for number, line in enumerate(lines, first):
        if line is None:
            skipped["undecodable_lines"] += 1
            continue
        if crlf and line.endswith("\r"):
            line = line[:-1]   # a CRLF file; a real carriage return would be escaped
        fields = line.split("\t")
        if len(fields) not in (2, 3):
            skipped["blank_lines" if not line.strip() else "lines_with_wrong_field_count"] += 1
            continue
        if "\\" in line:
            fields = [unescape_field(f) for f in fields]
        query, reply = fields[0], fields[1]
        if query.strip() and reply.strip():   # (so the line is not blank either)
            keep(Pair(query, reply, fields[2] if len(fields) == 3 else f"line{number}"))
        else:
            skipped["blank_lines" if not line.strip() else "pairs_with_empty_side"] += 1
    return pairs


# --- JSON lines -----------------------------------------------------------------------------

def jsonl_stream(path: Path) -> PairStream:
    """`{"query": q, "reply": r}` (optional "conversation") or `{"dialog": [t1, t2, ...]}`
    (optional "id") a line, plain or gzip'ed. A line without an id is its own conversation."""
    return PairStream(f"jsonl:{path}", lambda skipped: _jsonl_pairs(path, skipped))


def _jsonl_pairs(path: Path, skipped: Counter) -> Iterator[Pair]:
    for number, record in _json_records(_numbered_lines(path, "JSON lines file", skipped),
                                        skipped):
        dialog = record.get("dialog") if isinstance(record, dict) else None
        if isinstance(dialog, list) and all(isinstance(t, str) for t in dialog):
            conversation = str(record.get("id", f"line{number}"))
            texts: list[str | None] = [t.strip() for t in dialog]
        elif (isinstance(record, dict) and isinstance(record.get("query"), str)
              and isinstance(record.get("reply"), str)):
            conversation = str(record.get("conversation", f"line{number}"))
            texts = [record["query"].strip(), record["reply"].strip()]
        else:
            skipped["lines_with_wrong_fields"] += 1
            continue
        pairs: list[Pair] = []
        _consecutive_pairs(conversation, texts, pairs, skipped)
        yield from pairs


def _is_convokit(path: Path) -> bool:
    """Whether a .jsonl file holds ConvoKit utterances (its first JSON object says so)."""
    try:
        with _open_lines(path, "JSON lines file") as f:
            for _, line in zip(range(100), f, strict=False):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                return isinstance(record, dict) and "conversation_id" in record
    except (OSError, EOFError, zlib.error):
        return False
    return False


# --- the Cornell download -------------------------------------------------------------------

def extract_cornell_zip(zip_path: str | os.PathLike) -> Path:
    """Unpack the two files the chatbot needs from the official zip into the cache."""
    zip_path = Path(zip_path)
    digest = sha256_of(zip_path)
    target = cache_dir() / f"cornell-{digest[:16]}"
    wanted = ("movie_lines.txt", "movie_conversations.txt")
    if all((target / name).is_file() for name in wanted):
        return target
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = {Path(n).name: n for n in zf.namelist()
                       if Path(n).name in wanted and "__MACOSX" not in n}
            missing = [name for name in wanted if name not in members]
            if missing:
                raise UserError(f"{zip_path} has no {', '.join(missing)}; {CORNELL_HINT}")
            for name in wanted:
                atomic_write_bytes(target / name, zf.read(members[name]))
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"cannot unpack {zip_path} ({exc}); {CORNELL_HINT}") from None
    return target


def fetch_cornell() -> Path:
    """Download (once, verified) and unpack the official Cornell zip; its folder."""
    sha256 = os.environ.get("TORCHTUTOR_CORNELL_SHA256") or CORNELL_SHA256
    if not sha256:
        raise UserError("the Cornell zip has no pinned sha256 and an unverified download is "
                        "refused (set TORCHTUTOR_CORNELL_SHA256 to the checksum you trust); "
                        "or " + CORNELL_HINT)
    zip_path = cached_download(CORNELL_URL, sha256.lower(), "cornell_movie_dialogs_corpus.zip",
                               CORNELL_HINT)
    return extract_cornell_zip(zip_path)


# --- choosing a reader -------------------------------------------------------------------

def _find_cornell(folder: Path) -> Path | None:
    for candidate in (folder, folder / "cornell movie-dialogs corpus"):
        if (candidate / "movie_lines.txt").is_file() or \
                (candidate / "movie_conversations.txt").is_file():
            return candidate
    return None


def _find_convokit(folder: Path) -> Path | None:
    for candidate in (folder / "utterances.jsonl", folder / "movie-corpus" / "utterances.jsonl"):
        if candidate.is_file():
            return candidate
    return None


def _whole(name: str, read: Callable[[], Corpus]) -> PairStream:
    """A reader that needs the whole corpus (a join) as a stream."""
    def pairs(skipped: Counter) -> Iterator[Pair]:
        corpus = read()
        skipped.update(corpus.skipped)
        yield from corpus.pairs
    return PairStream(name, pairs)


def _is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".jsonl") or name.endswith(".jsonl.gz")


def stream_any(path: str | os.PathLike) -> PairStream:
    """A path in whichever supported format it holds, as a stream (see `open_corpus`)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"corpus {path} not found: give 'chatterbot', 'cornell', a Cornell "
                        "folder, a ConvoKit utterances.jsonl, a ChatterBot .yml, a JSON lines "
                        "file or a pair file (either may be gzip'ed)")
    if path.is_dir():
        if (found := _find_cornell(path)) is not None:
            return _cornell_stream(found)
        if (found := _find_convokit(path)) is not None:
            return _whole(f"convokit:{found}", lambda: read_convokit(found))
        if any(path.glob("*.yml")) or any(path.glob("*.yaml")):
            return _whole(f"chatterbot:{path}", lambda: read_chatterbot(path))
        raise UserError(f"{path} holds no corpus: expected movie_lines.txt and "
                        "movie_conversations.txt, utterances.jsonl, or ChatterBot .yml files")
    if not path.is_file():   # /dev/zero, a FIFO: endless or blocking, never a corpus
        raise UserError(f"corpus {path} is not a regular file or a folder; give a file")
    if path.suffix == ".zip":
        return _whole(f"cornell:{path}", lambda: read_cornell(extract_cornell_zip(path)))
    if _is_jsonl(path):
        if _is_convokit(path):
            return _whole(f"convokit:{path}", lambda: read_convokit(path))
        return jsonl_stream(path)
    if path.suffix in (".yml", ".yaml"):
        return _whole(f"chatterbot:{path}", lambda: read_chatterbot(path))
    return pairs_file_stream(path)


def read_any(path: str | os.PathLike) -> Corpus:
    """Read a path in whichever supported format it holds (see `load_corpus`)."""
    return stream_any(path).to_corpus()


def open_corpus(spec: str) -> PairStream:
    """'chatterbot' (bundled), 'cornell' (downloaded, cached) or a PATH, as a stream of
    raw-text pairs. Reading starts when it is iterated."""
    if spec == "chatterbot":
        return _whole("chatterbot", lambda: read_chatterbot(chatterbot_english_dir()))
    if spec == "cornell":
        return _whole("cornell", lambda: read_cornell(fetch_cornell()))
    return stream_any(spec)


def nothing_usable(spec: str, skipped: dict[str, int]) -> UserError:
    """The one-line error for a corpus that gave no pair at all."""
    return UserError(f"no usable (query, reply) pairs in {spec}"
                     + (f" (skipped: {describe_skipped(skipped)})" if skipped
                        else " (it is empty)"))


def load_corpus(spec: str) -> Corpus:
    """'chatterbot' (bundled), 'cornell' (downloaded, cached) or a PATH; raw-text pairs.

    Raises UserError, with the skip counts, when the corpus yields no pair at all.
    """
    corpus = open_corpus(spec).to_corpus()
    if not corpus.pairs:
        raise nothing_usable(spec, corpus.skipped)
    return corpus


def describe_skipped(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in skipped.items())


def _nonzero(counts: Counter) -> dict[str, int]:
    return {k: v for k, v in sorted(counts.items()) if v > 0}
