#!/usr/bin/env python3
"""Print (or --update) the node parameter table of docs/node.md from ovseg_ros.config.SCHEMA.

    python scripts/node_param_table.py            # print the markdown table
    python scripts/node_param_table.py --outputs  # the output table (ovseg_ros.core.outputs)
    python scripts/node_param_table.py --update   # rewrite both between their markers in
                                                  # docs/node.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BEGIN, END = "<!-- param-table:begin -->", "<!-- param-table:end -->"
OUT_BEGIN, OUT_END = "<!-- output-table:begin -->", "<!-- output-table:end -->"


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


def _replace(content: str, begin: str, end: str, text: str) -> str:
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{text}\n{end}{tail}"


def main(argv=None) -> int:
    from ovseg_ros.core.outputs import markdown_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", action="store_true", help="rewrite docs/node.md in place")
    ap.add_argument("--outputs", action="store_true", help="print the output table instead")
    args = ap.parse_args(argv)
    if not args.update:
        print(markdown_table() if args.outputs else table())
        return 0
    doc = ROOT / "docs" / "node.md"
    content = _replace(doc.read_text(), BEGIN, END, table())
    doc.write_text(_replace(content, OUT_BEGIN, OUT_END, markdown_table()))
    print(f"updated {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
