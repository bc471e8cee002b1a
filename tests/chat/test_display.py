"""Replies as a person reads them: the notes' normalization undone where it can be."""

import pytest

from torchtutor.chat.data.text import normalize, tokenize
from torchtutor.chat.infer.display import display_text


@pytest.mark.parametrize("english", [
    "I'm fine.", "Don't do that!", "You're right.", "I can't go.", "We won't stop.",
    "It's late. I'll call you.", "We've met? He'd know.", "That's my dad's car.",
    "Isn't it o'clock?", "Yes, ma'am.", "Let's go!", "Y'all are here.", "I didn't say it.",
])
def test_the_notes_contractions_round_trip(english):
    # No commas in the expectations: normalization drops them, as the notes do.
    assert display_text(tokenize(normalize(english))) == english.replace(",", "")


def test_pronoun_sentences_and_punctuation():
    assert display_text("i m fine . and you ?".split()) == "I'm fine. And you?"
    assert display_text("what ? ! i said i d come".split()) == "What?! I said I'd come"
    assert display_text("i ve seen it".split()) == "I've seen it"
    assert display_text([]) == ""
    assert display_text(["."]) == "."


def test_lone_letters_after_punctuation_stay_apart():
    # "U.S." normalizes to "u . s ."; the s there is not a contraction.
    shown = display_text("the u . s . army".split())
    assert "'" not in shown and shown.startswith("The u. S.")
    assert display_text("s".split()) == "S"


def test_only_the_notes_contractions_are_joined():
    # "rifle m" is no contraction: the old rule showed "That's all the rifle'm."
    assert display_text("that s all the rifle m .".split()) == "That's all the rifle m."
    assert display_text("you m t".split()) == "You m t"
    assert display_text("they re sure he d say we ll see".split()) == \
        "They're sure he'd say we'll see"
    assert display_text("don t s".split()) == "Don't s"   # no "don't's"
