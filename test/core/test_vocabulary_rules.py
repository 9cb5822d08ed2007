"""The per-class rules of core/vocabulary.py: control characters and the length limit
(boundaries included), each refused with its own message naming the class."""
import pytest

from ovseg_ros.core.vocabulary import VocabularyError, parse_vocabulary


@pytest.mark.parametrize("bad", ["cat\x00", "a\nb", "tab\there", "\x1b[31mred", "\x1f"])
def test_control_characters_are_refused(bad):
    with pytest.raises(VocabularyError, match="class 1 contains control characters"):
        parse_vocabulary(["dog", bad])


def test_printable_characters_pass():
    # space (32) is the first allowed code point; non-ASCII letters are fine
    names, _, _ = parse_vocabulary(["a b", "~", "café", "椅子"])
    assert names == ("a b", "~", "café", "椅子")


def test_length_limit_is_inclusive():
    names, _, _ = parse_vocabulary(["x" * 5], max_name_length=5)
    assert names == ("xxxxx",)
    with pytest.raises(VocabularyError, match=r"class 0 is 6 characters long; the limit is "
                                              r"max_class_name_length=5"):
        parse_vocabulary(["x" * 6], max_name_length=5)


def test_length_counts_the_whole_class_string_with_synonyms():
    # "ab, cd" is 6 characters although each synonym has 2
    with pytest.raises(VocabularyError, match="is 6 characters long"):
        parse_vocabulary(["ab, cd"], max_name_length=5)
    assert parse_vocabulary(["ab,cd"], max_name_length=5)[1] == (("ab", "cd"),)


def test_default_limit_is_256():
    parse_vocabulary(["y" * 256])
    with pytest.raises(VocabularyError, match="max_class_name_length=256"):
        parse_vocabulary(["y" * 257])
