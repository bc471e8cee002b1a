r"""Corpus readers: conversations in, consecutive (query, reply) pairs out.

Formats: Cornell Movie-Dialogs in its original ` +++$+++ ` files (iso-8859-1) or as ConvoKit
`utterances.jsonl`; the ChatterBot YAML corpus (bundled, the default); and our pair file.
Every reader keeps each valid pair and counts what it skipped, by reason, in
`Corpus.skipped`; `load_corpus` fails with one line only when no pair is left.

The pair file is UTF-8, one pair a line: `query<TAB>reply[<TAB>conversation]`. Inside a
field a backslash is written `\\`, a tab `\t`, a newline `\n` and a carriage return `\r`, so
any text round-trips exactly (quotes need no escaping). A reader meeting a backslash before
any other character keeps both characters. Without the third field each line is its own
conversation.
"""

import importlib.resources
import json
import os
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from torchtutor.runtime.download import cache_dir, cached_download, sha256_of
from torchtutor.runtime.errors import UserError
from torchtutor.runtime.files import atomic_write_bytes, atomic_write_text

CORNELL_URL = "http://www.cs.cornell.edu/~cristian/data/cornell_movie_dialogs_corpus.zip"
# The sha256 of the official zip as registered for this URL by the Julia DataDeps package of
# the corpus (a file checksum; it could not be recomputed here without network).
# TORCHTUTOR_CORNELL_SHA256 overrides it should the file ever be republished.
CORNELL_SHA256: str | None = "3bde8a571f615201bc2d2453e22878090719638592f774720eddec739de8c900"
CORNELL_HINT = ("download it yourself from " + CORNELL_URL + " and pass --corpus "
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
    folder = Path(folder)
    skipped: Counter = Counter()
    raw = _read_bytes(folder / "movie_lines.txt", "Cornell lines file")
    skipped["empty_files"] += not raw
    # One list comprehension per step: this file has a quarter of a million lines.
    rows = [line.split(_SEP) for line in _lines(_decode_cornell(raw))]
    good = [row for row in rows if len(row) == 5]
    _count_bad_rows(rows, len(good), skipped, "lines_with_wrong_field_count")
    # Texts are stripped once here (the notes strip each side of each pair).
    texts = {row[0]: row[4].strip() for row in good}
    skipped["duplicate_line_ids"] += len(good) - len(texts)

    pairs: list[Pair] = []
    raw = _read_bytes(folder / "movie_conversations.txt", "Cornell conversations file")
    skipped["empty_files"] += not raw
    rows = [line.split(_SEP) for line in _lines(_decode_cornell(raw))]
    good = [row for row in rows if len(row) == 4]
    _count_bad_rows(rows, len(good), skipped, "conversations_with_wrong_field_count")
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
        _consecutive_pairs(ids[0], found, pairs, skipped)
    return Corpus(f"cornell:{folder}", pairs, _nonzero(skipped))


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
    for line in _lines(raw):
        if not line.strip():
            skipped["blank_lines"] += 1
            continue
        try:
            utt = json.loads(line)
        except UnicodeDecodeError:
            skipped["undecodable_lines"] += 1
            continue
        except ValueError:
            skipped["lines_not_json"] += 1
            continue
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
    """Read a pair file (see the module doc); bad lines are skipped and counted."""
    path = Path(path)
    raw = _read_bytes(path, "pair file")
    skipped: Counter = Counter()
    try:
        lines = raw.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        lines = []
        for chunk in raw.split(b"\n"):
            try:
                lines.append(chunk.decode("utf-8"))
            except UnicodeDecodeError:
                skipped["undecodable_lines"] += 1
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    if lines and lines[-1] == "":
        lines.pop()   # the final newline ends the last line
    skipped["empty_files"] += not raw
    pairs: list[Pair] = []
    for number, line in enumerate(lines, 1):
        if line.endswith("\r"):
            line = line[:-1]   # a CRLF file; a real carriage return would be escaped
        if not line.strip():
            skipped["blank_lines"] += 1
            continue
        fields = line.split("\t")
        if len(fields) not in (2, 3):
            skipped["lines_with_wrong_field_count"] += 1
            continue
        query, reply = unescape_field(fields[0]), unescape_field(fields[1])
        conversation = unescape_field(fields[2]) if len(fields) == 3 else f"line{number}"
        if query.strip() and reply.strip():
            pairs.append(Pair(query, reply, conversation))
        else:
            skipped["pairs_with_empty_side"] += 1
    return Corpus(f"pairs:{path}", pairs, _nonzero(skipped))


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


def read_any(path: str | os.PathLike) -> Corpus:
    """Read a path in whichever supported format it holds (see `load_corpus`)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"corpus {path} not found: give 'chatterbot', 'cornell', a Cornell "
                        "folder, a ConvoKit utterances.jsonl, a ChatterBot .yml or a pair file")
    if path.is_dir():
        if (found := _find_cornell(path)) is not None:
            return read_cornell(found)
        if (found := _find_convokit(path)) is not None:
            return read_convokit(found)
        if any(path.glob("*.yml")) or any(path.glob("*.yaml")):
            return read_chatterbot(path)
        raise UserError(f"{path} holds no corpus: expected movie_lines.txt and "
                        "movie_conversations.txt, utterances.jsonl, or ChatterBot .yml files")
    if path.suffix == ".zip":
        return read_cornell(extract_cornell_zip(path))
    if path.suffix == ".jsonl":
        return read_convokit(path)
    if path.suffix in (".yml", ".yaml"):
        return read_chatterbot(path)
    return read_pairs_file(path)


def load_corpus(spec: str) -> Corpus:
    """'chatterbot' (bundled), 'cornell' (downloaded, cached) or a PATH; raw-text pairs.

    Raises UserError, with the skip counts, when the corpus yields no pair at all.
    """
    if spec == "chatterbot":
        corpus = read_chatterbot(chatterbot_english_dir())
        corpus.name = "chatterbot"
    elif spec == "cornell":
        corpus = read_cornell(fetch_cornell())
        corpus.name = "cornell"
    else:
        corpus = read_any(spec)
    if not corpus.pairs:
        raise UserError(f"no usable (query, reply) pairs in {spec}"
                        + (f" (skipped: {describe_skipped(corpus.skipped)})"
                           if corpus.skipped else " (it is empty)"))
    return corpus


def describe_skipped(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in skipped.items())


def _nonzero(counts: Counter) -> dict[str, int]:
    return {k: v for k, v in sorted(counts.items()) if v > 0}
