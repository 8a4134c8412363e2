"""The house's size, for issue reviews: the longest functions and the largest modules of the package.

    python scripts/sizes.py [--top 10]

Functions are measured by an AST walk of every .py file under src/textweaver (decorators excluded, docstrings
included); modules by lines, the browser's JavaScript (src/textweaver/web/**/*.js, vendor/ excluded) among them.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "textweaver"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    functions, modules = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        name = path.relative_to(PACKAGE)
        modules.append((len(source.splitlines()), str(name)))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
                functions.append((node.end_lineno - node.lineno + 1, f"{name}:{node.name}"))
    for path in sorted(p for p in (PACKAGE / "web").rglob("*.js") if "vendor" not in p.parts):
        modules.append((len(path.read_text(encoding="utf-8").splitlines()), str(path.relative_to(PACKAGE))))
    for title, rows in (("longest functions", functions), ("largest modules", modules)):
        print(f"{title} (lines):")
        for lines, name in sorted(rows, reverse=True)[: args.top]:
            print(f"  {lines:5d}  {name}")


if __name__ == "__main__":
    main()
