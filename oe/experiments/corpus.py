"""``oe corpus --out DIR``: a local English corpus in Wikitext's format, offline.

The docstrings of Python's standard library (modules, classes, functions; read with ``ast``,
nothing is imported) are the only sizeable English prose every machine with Python has. Each
module becomes one article `` = module.name = `` with one line per docstring paragraph, so
``WikitextDataModule`` reads it exactly like Wikitext. Every ``validation_every``-th article
(in name order) goes to ``validation.txt``, the rest to ``train.txt``. About 1.5 MB of text.
"""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path
from oe.cli.flags import Parser

SKIP = ("test", "tests", "site-packages", "idlelib", "lib2to3", "tkinter", "turtledemo")


def docstring_articles(max_articles: int | None = None) -> list[tuple[str, list[str]]]:
    """(module name, paragraphs) for the standard-library modules that have docstrings."""
    root = Path(sysconfig.get_paths()["stdlib"])
    articles = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in SKIP for part in rel.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        paragraphs = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                for para in (doc or "").split("\n\n"):
                    para = " ".join(para.split())
                    if len(para) >= 40:
                        paragraphs.append(para)
        if paragraphs:
            articles.append((".".join(rel.with_suffix("").parts), paragraphs))
            if max_articles is not None and len(articles) >= max_articles:
                break
    return articles


def wikitext_lines(title: str, paragraphs: list[str]) -> list[str]:
    lines = ["", f" = {title} = ", ""]
    for para in paragraphs:
        lines += [f" {para} ", ""]
    return lines


def write_corpus(out: str | Path, validation_every: int = 10,
                 max_articles: int | None = None) -> dict[str, Path]:
    """Write ``train.txt`` and ``validation.txt`` under ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[str]] = {"train": [], "validation": []}
    for i, (title, paragraphs) in enumerate(docstring_articles(max_articles)):
        split = "validation" if i % validation_every == validation_every - 1 else "train"
        splits[split] += wikitext_lines(title, paragraphs)
    paths = {}
    for split, lines in splits.items():
        paths[split] = out / f"{split}.txt"
        paths[split].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="oe corpus", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/docstrings", help="folder for train.txt, validation.txt")
    parser.add_argument("--validation_every", type=int, default=10)
    parser.add_argument("--max_articles", type=int, default=None)
    args = parser.parse_args(argv)
    if args.validation_every < 2:
        parser.error("--validation_every must be >= 2")
    for split, path in write_corpus(args.out, args.validation_every, args.max_articles).items():
        print(f"{split}: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0
