"""Model tokens -> the English a person reads: "i m fine ." -> "I'm fine."

The notes' normalization (chat.data.text) lowercases and turns every apostrophe into a space, so
the model speaks in tokens like `i m`, `don t` and `you re`. This module undoes what it can:
punctuation is joined back, the pieces of a contraction are rejoined with an apostrophe, the
pronoun `i` becomes `I`, and every sentence starts with a capital letter. Names and other
capitals are gone for good (the model never saw them). `display_text` is the one place that
does this; talk, reply, serve, the page and the exported chatbot all show its output.
"""

PUNCTUATION = (".", "!", "?")
# The contractions the notes' normalization splits, as (word before, piece after): "i m" ->
# "i'm", "don t" -> "don't". Only these pairs are joined back: a model that writes "rifle m"
# meant no contraction, and "rifle'm" would be wrong. "s" is the exception: after any word of
# two or more letters it is "it's" or a possessive ("dad's"); a lone letter stays apart
# ("u . s ." is U.S.).
CONTRACTIONS = {
    "t": {"don", "can", "won", "isn", "aren", "wasn", "weren", "didn", "doesn", "couldn",
          "wouldn", "shouldn", "haven", "hasn", "hadn", "ain", "mustn", "needn", "shan"},
    "m": {"i"},
    "re": {"you", "we", "they", "who", "what", "where", "there", "how", "why", "here"},
    "ve": {"i", "you", "we", "they", "who", "what", "could", "would", "should", "might",
           "must", "there"},
    "ll": {"i", "you", "he", "she", "it", "we", "they", "who", "what", "that", "there",
           "this", "where"},
    "d": {"i", "you", "he", "she", "it", "we", "they", "who", "what", "that", "there",
          "where", "how", "why"},
}
# Words whose apostrophe starts them or sits inside a longer word: o'clock, ma'am, y'all.
JOINED_PAIRS = {("o", "clock"): "o'clock", ("ma", "am"): "ma'am", ("y", "all"): "y'all"}
PRONOUN_I = {"i", "i'm", "i'll", "i'd", "i've"}


def _rejoin(words: list[str]) -> list[str]:
    """Tokens -> words: contractions rejoined, each word with the punctuation after it."""
    out: list[str] = []
    for word in words:
        previous = out[-1] if out else ""
        if word in PUNCTUATION and out:
            out[-1] = previous + word
        elif _contraction(previous, word):
            out[-1] = previous + "'" + word
        elif (previous, word) in JOINED_PAIRS:
            out[-1] = JOINED_PAIRS[(previous, word)]
        else:
            out.append(word)
    return out


def _contraction(previous: str, word: str) -> bool:
    """Whether `word` is the piece after the apostrophe of a contraction ending `previous`."""
    if word == "s":
        return len(previous) > 1 and previous.isalpha()
    return previous in CONTRACTIONS.get(word, ())


def display_text(words: list[str]) -> str:
    """The reply a person reads, from the model's tokens (see the module docstring)."""
    shown: list[str] = []
    start_of_sentence = True
    for word in _rejoin(words):
        bare = word.rstrip("".join(PUNCTUATION))
        if bare in PRONOUN_I:
            word = "I" + word[1:]
        if start_of_sentence and word[:1].isalpha():
            word = word[0].upper() + word[1:]
        shown.append(word)
        start_of_sentence = word[-1:] in PUNCTUATION
    return " ".join(shown)
