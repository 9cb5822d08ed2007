"""Benchmark class lists (ADE-847, PASCAL-Context-459) and the one-entry shortcut that
names a bundled list, wherever a vocabulary is accepted."""
from __future__ import annotations

import pytest

from ovseg_ros import load_segmenter
from ovseg_ros.core.class_names import bundled_lists, load_class_file
from ovseg_ros.core.vocabulary import VocabularyError, expand_shortcut, parse_vocabulary


@pytest.mark.parametrize("name,n,first,last", [
    ("ade847", 847, "wall", "adding machine"),
    ("pascal_context459", 459, "accordion", "wool"),
])
def test_benchmark_lists_are_complete_and_valid(name, n, first, last):
    lst = load_class_file(name)
    assert len(lst) == n
    names, synonyms, _ = parse_vocabulary(lst.names, max_classes=2000)   # no duplicates
    assert synonyms[0][0] == first and synonyms[-1][0] == last
    assert sum(len(s) for s in synonyms) > n                            # synonyms kept


def test_single_bundled_name_expands():
    assert {"ade150", "ade847", "pascal_context459", "coco_stuff171"} <= set(bundled_lists())
    names, synonyms, flags = parse_vocabulary(["ade847"])
    assert len(names) == 847 and synonyms[3] == ("tree", "trees")
    # the file's thing/stuff column is used; case and spaces do not matter
    coco = load_class_file("coco_stuff171")
    _, _, flags = parse_vocabulary([" COCO_Stuff171 "])
    assert flags == coco.is_thing and flags[0] is True and flags[-1] is False
    # anything else is a vocabulary as given
    assert parse_vocabulary(["person"])[0] == ("person",)
    assert expand_shortcut(["ade847", "person"]) == (["ade847", "person"], None)


def test_shortcut_errors_are_clear():
    with pytest.raises(VocabularyError, match="bundled list 'voc20'"):
        parse_vocabulary(["voc20"], [True])
    with pytest.raises(VocabularyError, match="exceed max_classes=100"):
        parse_vocabulary(["ade847"], max_classes=100)


def test_config_and_set_vocabulary_accept_the_shortcut(tiny_config):
    cfg = dict(tiny_config, vocabulary=["voc20"], prompt_templates="custom",
               custom_templates=["{}"])
    seg = load_segmenter(cfg)
    assert seg.vocabulary.num_classes == 20
    assert seg.vocabulary.names == parse_vocabulary(load_class_file("voc20").names)[0]
    state = seg.set_vocabulary(["pascal_context459"])
    assert state.num_classes == 459 and state.synonyms[1][0] == "aeroplane"
