"""Passkey retrieval (Mohtashami & Jaggi 2023), shrunk so a tiny byte-level model can learn it.

Each document is filler sentences with one line `the pass key is 40917. remember it.` at a random place and,
at the end, `what is the pass key? the pass key is 40917.` Answering needs attention back to the key line,
so it tells whether a KV-cache policy kept that line (`jaxsink.impact.passkey`).
"""
from __future__ import annotations

import numpy as np

# all 20 characters, so byte-level prompts of one filler count have one length (one batch, one compile)
FILLER = ("the grass is green. ", "the sky is so blue. ", "the sun is so warm. ", "and here we go now. ",
          "there and back now. ")
KEY_LINE = "the pass key is {}. remember it. "
QUESTION = "what is the pass key? the pass key is "


def passkey_document(rng: np.random.Generator, filler_sentences: int, digits: int = 5) -> tuple[str, str]:
    """(document without the answer, answer = the key and a full stop)."""
    key = "".join(str(d) for d in rng.integers(0, 10, digits))
    parts = [FILLER[i] for i in rng.integers(0, len(FILLER), filler_sentences)]
    parts.insert(int(rng.integers(0, filler_sentences + 1)), KEY_LINE.format(key))
    return "".join(parts) + QUESTION, key + "."


def passkey_docs(n_docs: int = 2048, filler_sentences: int = 12, seed: int = 0) -> list[str]:
    """Training documents (prompt + answer), deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    return ["".join(passkey_document(rng, filler_sentences)) for _ in range(n_docs)]
