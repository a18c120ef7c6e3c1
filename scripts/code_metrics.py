"""Size figures of the Python package: lines, and the longest classes and functions.

Usage::

    python scripts/code_metrics.py [ROOT] [--top N] [--json]

``ROOT`` defaults to ``python/tnattn``. Lines are counted as ``wc -l`` counts them (every line of
every ``.py`` file, blank lines and comments included). A class or function's length is the span
of its ``def``/``class`` statement from its first decorator to its last line (``ast`` end line),
so a method counts inside its class as well as on its own.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path


def _span(node: ast.AST) -> int:
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return node.end_lineno - first + 1


def measure(root: Path) -> dict:
    """Line count and ``(length, name)`` of every class and function below ``root``."""
    files = sorted(root.rglob("*.py"))
    lines = 0
    classes: list[tuple[int, str]] = []
    functions: list[tuple[int, str]] = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        lines += text.count("\n") + (0 if text.endswith("\n") or not text else 1)
        tree = ast.parse(text, filename=str(path))
        rel = path.relative_to(root.parent).as_posix()
        # Walk with the qualified name so a method reads Class.method.
        stack: list[tuple[ast.AST, str]] = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef):
                    name = f"{prefix}{child.name}"
                    classes.append((_span(child), f"{rel}:{child.lineno} {name}"))
                    stack.append((child, name + "."))
                elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = f"{prefix}{child.name}"
                    functions.append((_span(child), f"{rel}:{child.lineno} {name}"))
                    stack.append((child, name + "."))
                else:
                    stack.append((child, prefix))
    classes.sort(key=lambda t: (-t[0], t[1]))
    functions.sort(key=lambda t: (-t[0], t[1]))
    return {"files": len(files), "lines": lines, "classes": classes, "functions": functions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="python/tnattn", help="package folder (default: python/tnattn)")
    parser.add_argument("--top", type=int, default=3, help="how many of the longest classes/functions to list")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        parser.error(f"root: {root} is not a directory")
    m = measure(root)
    top = {"classes": m["classes"][: args.top], "functions": m["functions"][: args.top]}
    if args.json:
        print(json.dumps({"files": m["files"], "lines": m["lines"], **top}, indent=1))
        return 0
    print(f"{m['files']} files, {m['lines']} lines under {root}")
    for kind in ("classes", "functions"):
        print(f"longest {kind}:")
        for n, where in top[kind]:
            print(f"  {n:5d}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
