"""Every reader on small corpora, including each malformed case the issue names."""

import json
import zipfile

import pytest

import torchtutor.chat.data.corpus as corpus_mod
from torchtutor.chat.data.corpus import (
    Pair,
    escape_field,
    load_corpus,
    read_any,
    read_chatterbot,
    read_convokit,
    read_cornell,
    read_pairs_file,
    unescape_field,
    write_pairs_file,
)
from torchtutor.cli import main as cli_main
from torchtutor.runtime.errors import UserError

SEP = " +++$+++ "

NASTY = ["tab\tinside", 'quotes "double" and \'single\'', "back\\slash", "literal \\t not tab",
         "new\nline", "cr\rhere", "trailing backslash\\", "\\\\n", "  spaces kept  ",
         "unicode café — 😀", "\u2028line sep\x0bvt\x0cff\x1cfs\x85nel", "\\"]


def test_escape_round_trip():
    for text in NASTY:
        escaped = escape_field(text)
        assert "\t" not in escaped and "\n" not in escaped and "\r" not in escaped
        assert unescape_field(escaped) == text
    assert unescape_field("unknown \\q escape") == "unknown \\q escape"


def test_pairs_file_round_trips_exactly(tmp_path):
    pairs = [Pair(q, r, f"conv\t{i}")
             for i, (q, r) in enumerate(zip(NASTY, reversed(NASTY), strict=True))]
    write_pairs_file(tmp_path / "p.tsv", pairs, with_conversation=True)
    assert read_pairs_file(tmp_path / "p.tsv").pairs == pairs
    write_pairs_file(tmp_path / "q.tsv", [(p.query, p.reply) for p in pairs])
    back = read_pairs_file(tmp_path / "q.tsv")
    assert [(p.query, p.reply) for p in back.pairs] == [(p.query, p.reply) for p in pairs]
    assert [p.conversation for p in back.pairs] == [f"line{i}" for i in range(1, 13)]
    assert back.skipped == {}
    assert len((tmp_path / "q.tsv").read_bytes().split(b"\n")) == len(pairs) + 1


def test_pairs_file_skips_bad_lines_and_keeps_good_ones(tmp_path):
    raw = (b"\xef\xbb\xbfhello\tworld\r\n"   # BOM and CRLF are fine
           b"\n"                             # blank
           b"   \n"                          # blank
           b"only one field\n"               # wrong field count
           b"a\tb\tc\td\n"                   # wrong field count
           b"bad \xff byte\tx\n"             # undecodable
           b"  \tempty query\n"              # empty side
           b"good\tpair\tconv7\n")
    (tmp_path / "p.tsv").write_bytes(raw)
    c = read_pairs_file(tmp_path / "p.tsv")
    assert c.pairs == [Pair("hello", "world", "line1"), Pair("good", "pair", "conv7")]
    assert c.skipped == {"blank_lines": 2, "lines_with_wrong_field_count": 2,
                         "undecodable_lines": 1, "pairs_with_empty_side": 1}


@pytest.mark.parametrize("block", [1, 2, 7, 64])
def test_pairs_file_reads_the_same_in_any_block_size(tmp_path, monkeypatch, block):
    # Lines cut across reads, lines longer than a read, a bad byte in a block, CRLF in only
    # some lines, no final newline: the same pairs, line numbers and skip counts.
    raw = (b"\xef\xbb\xbfa first line\tlonger than any block\r\n\n"
           b"one\ttwo\n \t \nbad \xff\tx\nback\\\\slash\ttab\\tx\tc9\n"
           b"only\nlast\tline without newline")
    (tmp_path / "p.tsv").write_bytes(raw)
    whole = read_pairs_file(tmp_path / "p.tsv")
    assert [p.conversation for p in whole.pairs] == ["line1", "line3", "c9", "line8"]
    assert whole.pairs[2] == Pair("back\\slash", "tab\tx", "c9")
    monkeypatch.setattr(corpus_mod, "_BLOCK_BYTES", block)
    small = read_pairs_file(tmp_path / "p.tsv")
    assert small.pairs == whole.pairs and small.skipped == whole.skipped == {
        "blank_lines": 2, "undecodable_lines": 1, "lines_with_wrong_field_count": 1}


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_pairs_file(tmp_path / "nope.tsv")
    (tmp_path / "empty.tsv").write_bytes(b"")
    assert read_pairs_file(tmp_path / "empty.tsv").skipped == {"empty_files": 1}
    with pytest.raises(UserError, match="no usable"):
        load_corpus(str(tmp_path / "empty.tsv"))
    with pytest.raises(UserError, match="not found"):
        load_corpus(str(tmp_path / "nope"))
    (tmp_path / "dir").mkdir()
    with pytest.raises(UserError, match="holds no corpus"):
        load_corpus(str(tmp_path / "dir"))


def write_cornell(folder, lines, conversations):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "movie_lines.txt").write_bytes(
        "".join(line + "\n" for line in lines).encode("iso-8859-1"))
    (folder / "movie_conversations.txt").write_bytes(
        "".join(c + "\n" for c in conversations).encode("iso-8859-1"))


def cornell_line(lid, text, char="u0"):
    return SEP.join([lid, char, "m0", "NAME", text])


def cornell_conv(ids):
    return SEP.join(["u0", "u1", "m0", repr(list(ids))])


GOOD_LINES = [cornell_line("L4", "Fine, thanks."), cornell_line("L3", "How are you?"),
              cornell_line("L2", "Hello there."), cornell_line("L1", "Hi Éric!"),
              cornell_line("L11", "Bye."), cornell_line("L10", "See you.")]
GOOD_CONVS = [cornell_conv(["L1", "L2", "L3", "L4"]), cornell_conv(["L10", "L11"])]
EXPECTED = [Pair("Hi Éric!", "Hello there.", "L1"), Pair("Hello there.", "How are you?", "L1"),
            Pair("How are you?", "Fine, thanks.", "L1"), Pair("See you.", "Bye.", "L10")]


def test_cornell_original_reads_latin1_pairs(tmp_path):
    write_cornell(tmp_path, GOOD_LINES, GOOD_CONVS)
    c = read_cornell(tmp_path)
    assert c.pairs == EXPECTED and c.skipped == {}
    # the zip's folder name is found one level down
    write_cornell(tmp_path / "z" / "cornell movie-dialogs corpus", GOOD_LINES, GOOD_CONVS)
    assert read_any(tmp_path / "z").pairs == EXPECTED


def test_cornell_copy_resaved_as_utf8_with_crlf_reads_the_same(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "movie_lines.txt").write_bytes(
        "".join(line + "\r\n" for line in GOOD_LINES).encode("utf-8"))
    (tmp_path / "movie_conversations.txt").write_bytes(
        "".join(c + "\r\n" for c in GOOD_CONVS).encode("utf-8"))
    c = read_cornell(tmp_path)
    assert c.pairs == EXPECTED and c.skipped == {}


def test_cornell_original_skips_bad_records(tmp_path):
    lines = GOOD_LINES + [
        "",                                           # blank
        "L20 +++$+++ u0 +++$+++ m0 +++$+++ too few",  # wrong field count
        cornell_line("L30", "   "),                   # empty text
        cornell_line("L31", "Alone now"),
        cornell_line("L32", "A reply"),
        cornell_line("L33", "and another"),
    ]
    convs = GOOD_CONVS + [
        "u0 +++$+++ u1 +++$+++ ['L31']",              # wrong field count
        cornell_conv(["L31", "L99", "L32", "L33"]),   # L99 missing: only L32 -> L33 is a pair
        cornell_conv(["L30", "L31"]),                 # empty side
        SEP.join(["u0", "u1", "m0", "[]"]),           # no line ids
        "",                                           # blank
    ]
    write_cornell(tmp_path, lines, convs)
    c = read_cornell(tmp_path)
    assert c.pairs == EXPECTED + [Pair("A reply", "and another", "L31")]
    assert c.skipped == {"blank_lines": 2, "lines_with_wrong_field_count": 1,
                         "conversations_with_wrong_field_count": 1, "missing_line_ids": 1,
                         "pairs_with_empty_side": 1, "conversations_without_line_ids": 1}


def test_cornell_missing_or_empty_files(tmp_path):
    write_cornell(tmp_path, GOOD_LINES, GOOD_CONVS)
    (tmp_path / "movie_conversations.txt").unlink()
    with pytest.raises(UserError, match="movie_conversations.txt not found"):
        load_corpus(str(tmp_path))
    (tmp_path / "movie_conversations.txt").write_bytes(b"")
    with pytest.raises(UserError, match="1 empty files"):
        load_corpus(str(tmp_path))


def utterance(uid, conv, text, **extra):
    return json.dumps({"id": uid, "conversation_id": conv, "text": text, "speaker": "u0",
                       "meta": {"movie_id": "m0"}, "reply-to": None, "timestamp": None,
                       "vectors": [], **extra})


def test_convokit_orders_by_id_and_matches_the_original_format(tmp_path):
    # ConvoKit lists utterances newest first, as the movie_lines.txt order above does.
    rows = [utterance("L4", "L1", "Fine, thanks."), utterance("L3", "L1", "How are you?"),
            utterance("L2", "L1", "Hello there."), utterance("L1", "L1", "Hi Éric!"),
            utterance("L11", "L10", "Bye."), utterance("L10", "L10", "See you.")]
    path = tmp_path / "movie-corpus" / "utterances.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert read_any(tmp_path).pairs == EXPECTED
    assert load_corpus(str(path)).pairs == EXPECTED


def test_convokit_timestamps_win_over_ids(tmp_path):
    rows = [utterance("L1", "c", "second", timestamp=20), utterance("L2", "c", "first",
                                                                    timestamp=10)]
    (tmp_path / "u.jsonl").write_text("\n".join(rows))
    assert read_convokit(tmp_path / "u.jsonl").pairs == [Pair("first", "second", "c")]


def test_convokit_without_numbers_reverses_file_order(tmp_path):
    rows = [utterance("c", "a", "third"), utterance("b", "a", "second"),
            utterance("a", "a", "first")]
    (tmp_path / "u.jsonl").write_text("\n".join(rows))
    assert read_convokit(tmp_path / "u.jsonl").pairs == [Pair("first", "second", "a"),
                                                        Pair("second", "third", "a")]


def test_convokit_skips_bad_records(tmp_path):
    raw = "\n".join([utterance("L2", "L1", "reply"), "", "{not json",
                     json.dumps({"id": "L5", "text": "no conversation"}),
                     utterance("L1", "L1", "query"), utterance("L1", "L1", "dup")]).encode()
    raw += b'\n{"id": "L9", "conversation_id": "L9", "text": "bad \xff"}\n'
    (tmp_path / "utterances.jsonl").write_bytes(raw)
    c = read_convokit(tmp_path / "utterances.jsonl")
    assert c.pairs == [Pair("query", "reply", "L1")]
    assert c.skipped == {"blank_lines": 1, "lines_not_json": 1, "lines_with_wrong_fields": 1,
                         "duplicate_line_ids": 1, "undecodable_lines": 1}


def test_bundled_chatterbot_corpus():
    c = load_corpus("chatterbot")
    assert c.name == "chatterbot"
    assert len(c.pairs) > 2000
    assert Pair("What is AI?", "Artificial Intelligence is the branch of engineering and "
                "science devoted to constructing machines that think.", "ai:0") in c.pairs
    # one entry of trivia.yml is a single string, not a list of utterances
    assert c.skipped == {"conversations_not_a_list_of_texts": 1}


def test_chatterbot_yaml_keeps_scalars_as_text_and_skips_bad_files(tmp_path):
    (tmp_path / "good.yml").write_text(
        "categories:\n- x\nconversations:\n- - Are you there?\n  - yes\n  - 42\n"
        "- - lonely\n- - '  '\n  - empty side\n- - nested\n  - [a, b]\n", encoding="utf-8")
    (tmp_path / "empty.yml").write_bytes(b"")
    (tmp_path / "broken.yml").write_text("conversations: [unclosed\n")
    (tmp_path / "latin1.yml").write_bytes(b"conversations:\n- - caf\xe9\n  - x\n")
    (tmp_path / "other.yml").write_text("categories:\n- nothing here\n")
    c = read_chatterbot(tmp_path)
    assert c.pairs == [Pair("Are you there?", "yes", "good:0"), Pair("yes", "42", "good:0")]
    assert c.skipped == {"empty_files": 1, "files_not_yaml": 1, "undecodable_files": 1,
                         "files_without_conversations": 1, "pairs_with_empty_side": 1,
                         "conversations_not_a_list_of_texts": 1}
    assert load_corpus(str(tmp_path / "good.yml")).pairs == c.pairs


def test_local_cornell_zip_is_unpacked_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    write_cornell(tmp_path / "src", GOOD_LINES, GOOD_CONVS)
    zpath = tmp_path / "cornell_movie_dialogs_corpus.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for name in ("movie_lines.txt", "movie_conversations.txt"):
            zf.write(tmp_path / "src" / name, f"cornell movie-dialogs corpus/{name}")
            zf.writestr(f"__MACOSX/cornell movie-dialogs corpus/._{name}", b"junk")
    assert load_corpus(str(zpath)).pairs == EXPECTED
    assert len(list((tmp_path / "cache").glob("cornell-*/movie_lines.txt"))) == 1
    assert load_corpus(str(zpath)).pairs == EXPECTED   # reused
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot unpack"):
        load_corpus(str(tmp_path / "bad.zip"))


def test_cornell_download_without_network_says_how_to_use_a_local_copy(tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(corpus_mod, "CORNELL_URL", "http://127.0.0.1:9/cornell.zip")
    monkeypatch.setattr(corpus_mod, "CORNELL_SHA256", "0" * 64)
    with pytest.raises(UserError) as info:
        load_corpus("cornell")
    message = str(info.value)
    assert "could not download http://127.0.0.1:9/cornell.zip" in message
    assert "--data /path/to/cornell_movie_dialogs_corpus.zip" in message
    assert cli_main(["chat", "prepare", "--data", "cornell", "--out",
                     str(tmp_path / "o")]) == 2
    said, error = capsys.readouterr().err.splitlines()[-2:]  # what it tried, why it failed
    assert said.startswith("downloading http://127.0.0.1:9/cornell.zip into ")
    assert error.startswith("error: could not download")


def test_cornell_download_is_refused_without_a_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHTUTOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHTUTOR_CORNELL_SHA256", raising=False)
    monkeypatch.setattr(corpus_mod, "CORNELL_SHA256", None)
    monkeypatch.setattr(corpus_mod, "CORNELL_URL", "http://127.0.0.1:9/must-not-be-fetched")
    with pytest.raises(UserError, match="unverified download is refused.*--data"):
        load_corpus("cornell")


def test_gzipped_pairs_file_reads_like_the_plain_one(tmp_path):
    import gzip

    pairs = [Pair(q, r, f"c{i % 3}") for i, (q, r) in enumerate(zip(NASTY, NASTY[1:],
                                                                      strict=False))]
    write_pairs_file(tmp_path / "p.tsv", pairs, with_conversation=True)
    raw = (tmp_path / "p.tsv").read_bytes() + b"only one field\n"
    (tmp_path / "p.tsv.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "p.tsv").write_bytes(raw)
    plain, packed = load_corpus(str(tmp_path / "p.tsv")), load_corpus(str(tmp_path / "p.tsv.gz"))
    assert packed.pairs == plain.pairs == pairs
    assert packed.skipped == plain.skipped == {"lines_with_wrong_field_count": 1}
    (tmp_path / "cut.tsv.gz").write_bytes(gzip.compress(raw * 50)[:-20])
    with pytest.raises(UserError, match="cannot read pair file .*cut.tsv.gz after line"):
        load_corpus(str(tmp_path / "cut.tsv.gz"))


def test_json_lines_pairs_and_dialogs_stream_alike_plain_or_gzipped(tmp_path):
    import gzip

    rows = [json.dumps({"query": "Hi!", "reply": "Hello.", "conversation": "a"}),
            json.dumps({"dialog": ["One", "Two", "  ", "Three", "Four"], "id": "b"}),
            json.dumps({"query": "alone", "reply": "no id"}),
            "", "{broken", json.dumps({"dialog": ["x", 3]}), json.dumps(["a", "b"])]
    raw = ("\n".join(rows) + "\n").encode() + b'{"query": "bad \xff", "reply": "x"}\n'
    (tmp_path / "d.jsonl").write_bytes(raw)
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(raw))
    expected = [Pair("Hi!", "Hello.", "a"), Pair("One", "Two", "b"), Pair("Three", "Four", "b"),
                Pair("alone", "no id", "line3")]
    skipped = {"blank_lines": 1, "lines_not_json": 1, "lines_with_wrong_fields": 2,
               "undecodable_lines": 1, "pairs_with_empty_side": 2}
    for name in ("d.jsonl", "d.jsonl.gz"):
        c = load_corpus(str(tmp_path / name))
        assert c.pairs == expected and c.skipped == skipped, name
