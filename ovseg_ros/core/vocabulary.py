"""Parsing and validation of vocabularies ("person", "sofa,couch", ...).

Shortcut: a vocabulary of exactly one entry that names a bundled class list
(``ade150``, ``ade847``, ``pascal_context459``, ``coco_stuff171``, ... — the
files in ``ovseg_ros/data/class_names/``) stands for that whole list, with its
thing/stuff column when the file has one. It is expanded here, once, so the
config's ``vocabulary: [ade847]``, a ``set_vocabulary`` request with the single
entry ``ade847`` and the CLIs' class options all accept it.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from .class_names import COCO_STUFF_NAMES, bundled_lists, load_class_file


class VocabularyError(ValueError):
    """A vocabulary request is invalid; the message says what and where."""


def split_synonyms(class_string: str) -> Tuple[str, ...]:
    """'sofa, couch' -> ('sofa', 'couch'); empty synonyms are dropped."""
    return tuple(s.strip() for s in class_string.split(",") if s.strip())


def default_is_thing(synonyms: Sequence[str]) -> bool:
    """A class is stuff when any synonym is a COCO-panoptic stuff name, else a thing."""
    return not any(s.lower() in COCO_STUFF_NAMES for s in synonyms)


def expand_shortcut(classes: Sequence[str], is_thing: Optional[Sequence[bool]] = None
                    ) -> Tuple[List[str], Optional[List[bool]]]:
    """[name of a bundled list] -> (its classes, its thing flags or ``is_thing``); any other
    vocabulary is returned as given."""
    classes = list(classes)
    if len(classes) != 1 or not isinstance(classes[0], str):
        return classes, None if is_thing is None else list(is_thing)
    name = classes[0].strip().lower()
    if name not in bundled_lists():
        return classes, None if is_thing is None else list(is_thing)
    lst = load_class_file(name)
    if is_thing and len(is_thing) != len(lst):
        raise VocabularyError(f"is_thing has {len(is_thing)} entries for the {len(lst)} classes "
                              f"of the bundled list {name!r} (give one per class, or none)")
    flags = list(is_thing) if is_thing else (list(lst.is_thing) if lst.is_thing else None)
    return list(lst.names), flags


def parse_vocabulary(classes: Sequence[str], is_thing: Optional[Sequence[bool]] = None, *,
                     max_classes: int = 1024, max_name_length: int = 256
                     ) -> Tuple[Tuple[str, ...], Tuple[Tuple[str, ...], ...], Tuple[bool, ...]]:
    """Validate a request and return (names, synonyms per class, is_thing per class).

    A single entry naming a bundled class list is that list (``expand_shortcut``).
    Raises VocabularyError for: no classes, too many, a non-string, an empty or
    over-long class string, duplicate classes (after normalising case and
    spaces), or an is_thing list of the wrong length.
    """
    if isinstance(classes, str):
        raise VocabularyError("classes must be a list of strings, not one string")
    classes, is_thing = expand_shortcut(classes, is_thing)
    if not classes:
        raise VocabularyError("the vocabulary is empty: give at least one class")
    if len(classes) > max_classes:
        raise VocabularyError(f"{len(classes)} classes exceed max_classes={max_classes}")
    if is_thing is not None and len(is_thing) not in (0, len(classes)):
        raise VocabularyError(f"is_thing has {len(is_thing)} entries for {len(classes)} classes "
                              "(give one per class, or none)")
    names, synonyms, seen = [], [], {}
    for i, raw in enumerate(classes):
        if not isinstance(raw, str):
            raise VocabularyError(f"class {i} is not a string: {raw!r}")
        if len(raw) > max_name_length:
            raise VocabularyError(f"class {i} is {len(raw)} characters long; the limit is "
                                  f"max_class_name_length={max_name_length}")
        if any(ord(c) < 32 for c in raw):
            raise VocabularyError(f"class {i} contains control characters: {raw!r}")
        syns = split_synonyms(raw)
        if not syns:
            raise VocabularyError(f"class {i} is empty: {raw!r}")
        key = ",".join(" ".join(s.lower().split()) for s in syns)
        if key in seen:
            raise VocabularyError(f"class {i} ({raw!r}) duplicates class {seen[key]}")
        seen[key] = i
        names.append(", ".join(syns) if len(syns) > 1 else syns[0])
        synonyms.append(syns)
    if is_thing:
        flags = tuple(bool(f) for f in is_thing)
    else:
        flags = tuple(default_is_thing(s) for s in synonyms)
    return tuple(names), tuple(synonyms), flags
