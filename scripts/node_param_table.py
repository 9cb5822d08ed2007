#!/usr/bin/env python3
"""Print (or --update) the node parameter table of docs/node.md from ovseg_ros.config.SCHEMA.

    python scripts/node_param_table.py            # print the markdown table
    python scripts/node_param_table.py --update   # rewrite it between the markers in docs/node.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BEGIN, END = "<!-- param-table:begin -->", "<!-- param-table:end -->"


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, str):
        return f'"{v}"' if v == "" else v
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def table() -> str:
    from ovseg_ros.config import SCHEMA_LIST

    rows = ["| parameter | type | default | range / choices | changeable | description |",
            "|---|---|---|---|---|---|"]
    for p in SCHEMA_LIST:
        if p.choices:
            rng = ", ".join(p.choices)
        elif p.min is not None or p.max is not None:
            rng = f"{_fmt(p.min) if p.min is not None else ''} .. " \
                  f"{_fmt(p.max) if p.max is not None else ''}"
        else:
            rng = ""
        where = "runtime" if p.runtime else "start-up"
        scope = " (node)" if p.node_only else ""
        desc = p.description.replace("|", "\\|")
        rows.append(f"| `{p.name}` | {p.kind} | `{_fmt(p.default)}` | {rng} | {where}{scope} | "
                    f"{desc} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", action="store_true", help="rewrite docs/node.md in place")
    args = ap.parse_args(argv)
    text = table()
    if not args.update:
        print(text)
        return 0
    doc = ROOT / "docs" / "node.md"
    content = doc.read_text()
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    print(f"updated {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
