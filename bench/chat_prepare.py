"""Preparing the Cornell corpus: the tutorial's preprocessing vs `torchtutor chat prepare`.

    python bench/chat_prepare.py [--data ../shared/data/cornell] [--repeats 2]

"tutorial" is a re-implementation, written for this benchmark, of the notes' preprocessing
with its data structures: a dict of field dicts per movie line, a regex over each
conversation's id list, the formatted pair file written with `csv` and read back, the
per-character `unicodeToAscii` and three `re.sub` per sentence, a `Voc` class that counts word
by word, `trim`, and the pair filter. (Like the notes it splits the formatted file on tabs, so
the 657 tabs inside Cornell lines shift a few pairs; its counts can differ slightly from ours,
which is why the counts are printed too.) "torchtutor" is `prepare_folder`, everything
`chat prepare` does (the streamed passes, the token store and the text files). Both run in
this one process, alternately, `--repeats` times each; the table shows the best and the mean
wall-clock time.
"""

import argparse
import csv
import re
import statistics
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

from torchtutor.chat.data.prepare import PrepareConfig, prepare_folder

REPO = Path(__file__).resolve().parents[1]
MAX_LENGTH, MIN_COUNT = 10, 3
PAD_token, SOS_token, EOS_token = 0, 1, 2


# --- the tutorial's preprocessing, re-implemented -------------------------------------------

def tutorial_load_lines(path):
    fields = ["lineID", "characterID", "movieID", "character", "text"]
    lines = {}
    with open(path, encoding="iso-8859-1") as f:
        for line in f:
            values = line.split(" +++$+++ ")
            obj = {}
            for i, name in enumerate(fields):
                obj[name] = values[i]
            lines[obj["lineID"]] = obj
    return lines


def tutorial_load_conversations(path, lines):
    fields = ["character1ID", "character2ID", "movieID", "utteranceIDs"]
    conversations = []
    with open(path, encoding="iso-8859-1") as f:
        for line in f:
            values = line.split(" +++$+++ ")
            obj = {}
            for i, name in enumerate(fields):
                obj[name] = values[i]
            ids = re.compile("L[0-9]+").findall(obj["utteranceIDs"])
            obj["lines"] = [lines[i] for i in ids]
            conversations.append(obj)
    return conversations


def tutorial_extract_pairs(conversations):
    pairs = []
    for conv in conversations:
        for i in range(len(conv["lines"]) - 1):
            query = conv["lines"][i]["text"].strip()
            reply = conv["lines"][i + 1]["text"].strip()
            if query and reply:
                pairs.append([query, reply])
    return pairs


class Voc:
    def __init__(self):
        self.trimmed = False
        self.word2index, self.word2count = {}, {}
        self.index2word = {PAD_token: "PAD", SOS_token: "SOS", EOS_token: "EOS"}
        self.num_words = 3

    def add_sentence(self, sentence):
        for word in sentence.split(" "):
            self.add_word(word)

    def add_word(self, word):
        if word not in self.word2index:
            self.word2index[word] = self.num_words
            self.word2count[word] = 1
            self.index2word[self.num_words] = word
            self.num_words += 1
        else:
            self.word2count[word] += 1

    def trim(self, min_count):
        if self.trimmed:
            return
        self.trimmed = True
        keep = [w for w, n in self.word2count.items() if n >= min_count]
        self.word2index, self.word2count = {}, {}
        self.index2word = {PAD_token: "PAD", SOS_token: "SOS", EOS_token: "EOS"}
        self.num_words = 3
        for word in keep:
            self.add_word(word)


def unicode_to_ascii(s):
    return "".join(c for c in unicodedata.normalize("NFD", s)
                   if unicodedata.category(c) != "Mn")


def normalize_string(s):
    s = unicode_to_ascii(s.lower().strip())
    s = re.sub(r"([.!?])", r" \1", s)
    s = re.sub(r"[^a-zA-Z.!?]+", r" ", s)
    return re.sub(r"\s+", r" ", s).strip()


def tutorial_prepare(folder: Path, work: Path) -> dict:
    lines = tutorial_load_lines(folder / "movie_lines.txt")
    conversations = tutorial_load_conversations(folder / "movie_conversations.txt", lines)
    datafile = work / "formatted_movie_lines.txt"
    with open(datafile, "w", encoding="utf-8") as out:
        writer = csv.writer(out, delimiter="\t", lineterminator="\n")
        for pair in tutorial_extract_pairs(conversations):
            writer.writerow(pair)
    text_lines = open(datafile, encoding="utf-8").read().strip().split("\n")
    pairs = [[normalize_string(s) for s in line.split("\t")] for line in text_lines]
    read = len(pairs)
    pairs = [p for p in pairs
             if len(p[0].split(" ")) < MAX_LENGTH and len(p[1].split(" ")) < MAX_LENGTH]
    filtered = len(pairs)
    voc = Voc()
    for pair in pairs:
        voc.add_sentence(pair[0])
        voc.add_sentence(pair[1])
    counted = voc.num_words - 3
    voc.trim(MIN_COUNT)
    keep = []
    for pair in pairs:
        if all(w in voc.word2index for w in pair[0].split(" ")) and \
                all(w in voc.word2index for w in pair[1].split(" ")):
            keep.append(pair)
    return {"pairs_read": read, "pairs_length_filtered": filtered, "words_counted": counted,
            "words_kept": voc.num_words - 3, "pairs_kept": len(keep)}


def torchtutor_prepare(folder: Path, work: Path) -> dict:
    stats = prepare_folder(PrepareConfig(corpus=str(folder), max_length=MAX_LENGTH,
                                         min_count=MIN_COUNT), work / "prepared")
    return {k: stats[k] for k in ("pairs_read", "pairs_length_filtered", "words_counted",
                                       "words_kept", "pairs_kept")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cornell"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    folder = Path(args.data)
    if not (folder / "movie_lines.txt").is_file():
        print(f"no Cornell corpus at {folder}", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = {"tutorial": [], "torchtutor": []}
    counts: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, fn in (("tutorial", tutorial_prepare), ("torchtutor", torchtutor_prepare)):
                start = time.perf_counter()
                counts[name] = fn(folder, Path(tmp))
                times[name].append(time.perf_counter() - start)
    print(f"Cornell corpus at {folder}, max length {MAX_LENGTH}, min count {MIN_COUNT}, "
          f"{args.repeats} runs each\n")
    keys = ["best s", "mean s", *counts["tutorial"]]
    print(f"| {'':<10} | " + " | ".join(f"{k:>21}" for k in keys) + " |")
    print(f"|{'-' * 12}|" + "|".join("-" * 22 + ":" for _ in keys) + "|")
    for name in ("tutorial", "torchtutor"):
        cells = [f"{min(times[name]):.2f}", f"{statistics.mean(times[name]):.2f}",
                 *(f"{counts[name][k]:,}" for k in counts[name])]
        print(f"| {name:<10} | " + " | ".join(f"{c:>21}" for c in cells) + " |")
    speedup = min(times["tutorial"]) / min(times["torchtutor"])
    print(f"\ntorchtutor is {speedup:.1f}x faster (best of {args.repeats})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
