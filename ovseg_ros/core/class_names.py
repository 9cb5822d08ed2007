"""Bundled class-name files (benchmarks and COCO panoptic), with synonyms.

Format of ``ovseg_ros/data/class_names/<name>.txt``: one class per line,
synonyms separated by ',', the first being the display name; an optional
tab-separated second column says ``thing`` or ``stuff``. '#' starts a comment.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Tuple, Union

CLASS_NAME_DIR = Path(__file__).resolve().parent.parent / "data" / "class_names"


@dataclass(frozen=True)
class ClassList:
    names: Tuple[str, ...]                 # class strings ("sofa,couch")
    is_thing: Optional[Tuple[bool, ...]]   # None when the file has no thing/stuff column

    def __len__(self) -> int:
        return len(self.names)


def parse_class_file(text: str, source: str = "<string>") -> ClassList:
    names, flags = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        parts = line.split("\t")
        name = parts[0].strip()
        if not name:
            raise ValueError(f"{source}:{lineno}: empty class name")
        names.append(name)
        if len(parts) > 1:
            kind = parts[1].strip().lower()
            if kind not in ("thing", "stuff"):
                raise ValueError(f"{source}:{lineno}: second column must be 'thing' or 'stuff', "
                                 f"got {parts[1]!r}")
            flags.append(kind == "thing")
    if flags and len(flags) != len(names):
        raise ValueError(f"{source}: thing/stuff column given for some classes only")
    return ClassList(tuple(names), tuple(flags) if flags else None)


def load_class_file(name_or_path: Union[str, Path]) -> ClassList:
    """A bundled list by name ('coco_panoptic', 'ade150', ...) or any file path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = CLASS_NAME_DIR / f"{name_or_path}.txt"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        bundled = sorted(p.stem for p in CLASS_NAME_DIR.glob("*.txt"))
        raise FileNotFoundError(f"class-name file {name_or_path!r} not found ({exc.strerror}); "
                                f"bundled lists: {bundled}") from exc
    return parse_class_file(text, str(path))


def bundled_lists() -> Tuple[str, ...]:
    """Names of the bundled class lists ('ade150', 'ade847', 'coco_stuff171', ...)."""
    return tuple(sorted(p.stem for p in CLASS_NAME_DIR.glob("*.txt")))


@lru_cache(maxsize=1)
def _coco_sets():
    coco = load_class_file("coco_panoptic")
    things, stuff = set(), set()
    for name, thing in zip(coco.names, coco.is_thing):
        for syn in name.split(","):
            (things if thing else stuff).add(syn.strip().lower())
    return frozenset(things), frozenset(stuff)


class _LazySet:
    """A frozenset loaded from the bundled file on first use."""

    def __init__(self, index: int):
        self._index = index

    def __contains__(self, item) -> bool:
        return item in _coco_sets()[self._index]

    def __iter__(self):
        return iter(_coco_sets()[self._index])

    def __len__(self) -> int:
        return len(_coco_sets()[self._index])


#: every synonym of a COCO-panoptic thing / stuff class, lower case
COCO_THING_NAMES = _LazySet(0)
COCO_STUFF_NAMES = _LazySet(1)
