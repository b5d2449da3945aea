"""Passkey retrieval (Mohtashami & Jaggi 2023), shrunk so a tiny byte-level model learns it: the corpus
`passkey`, generated like `bb_guo` (one row per document from BOS, fresh rows at every step).

A document is n filler sentences with one line `the pass key is #40917. remember it.` at a random place, then
`what is the pass key? the pass key is #40917.` Answering needs attention back to the key line, so it tells
whether a KV-cache policy kept that line (`jaxsink.impact.passkey`: held-out prompts with n = 12).

Why it is built this way (the first versions, random crops of concatenated documents, stayed at chance: after
1500 steps, and after 1000 steps with the `#` and distinct digits below, even when the key line came right
before the question; docs/impact.md):
- One document per row, from BOS, as the held-out prompts are: no earlier document's key in view, so
  exactly one key line precedes the question.
- The `#` occurs nowhere else, so a one-token induction head finds the first digit ("after this `#`, copy
  what followed the previous `#`"), and the same head on the digit before finds every later one; the key's
  digits are distinct (30,240 keys of 5), so that digit occurs once in the key line and the copy is
  unambiguous (with repeats allowed, 70% of 5-digit keys have one).
- After the answer the question and answer repeat until the row is full: the repeats copy from close by,
  which bootstraps the induction circuit that the first answer then uses over the long distance (the
  repeated-sequence curriculum of induction-head studies); held-out accuracy scores the first answer only.
- n is uniform in 0..12 per training row, so the first answer is recalled from every distance up to the
  held-out prompts'.
"""
from __future__ import annotations

import numpy as np

NAME = "passkey"
# all 20 characters, so byte-level prompts of one filler count have one length (one batch, one compile)
FILLER = ("the grass is green. ", "the sky is so blue. ", "the sun is so warm. ", "and here we go now. ",
          "there and back now. ")
MARK = "#"
KEY_LINE = "the pass key is " + MARK + "{}. remember it. "
QUESTION = "what is the pass key? the pass key is " + MARK
MAX_FILLER = 12             # filler sentences of the held-out prompts (jaxsink.impact.passkey)
HELDOUT_ROWS = 256


def passkey_document(rng: np.random.Generator, filler_sentences: int, digits: int = 5) -> tuple[str, str]:
    """(document up to the question, answer = the key and a full stop)."""
    key = "".join(str(d) for d in rng.permutation(10)[:digits])     # distinct digits: see the docstring
    parts = [FILLER[i] for i in rng.integers(0, len(FILLER), filler_sentences)]
    parts.insert(int(rng.integers(0, filler_sentences + 1)), KEY_LINE.format(key))
    return "".join(parts) + QUESTION, key + "."


def row_text(rng: np.random.Generator, length: int, max_filler: int = MAX_FILLER) -> str:
    """One training row of `length` bytes: a document with 0..max_filler filler sentences, its answer, then
    ` question answer` repeated, cut at `length`."""
    prompt, answer = passkey_document(rng, int(rng.integers(0, max_filler + 1)))
    text = prompt + answer
    while len(text) < length:
        text += " " + QUESTION + answer
    return text[:length]


def rows(rng: np.random.Generator, n: int, seq_len: int) -> np.ndarray:
    """n rows of byte ids [n, seq_len] (BOS not included)."""
    return np.stack([np.frombuffer(row_text(rng, seq_len).encode("ascii"), np.uint8) for _ in range(n)])


def train_batch(*, seed: int, step: int, batch_size: int, seq_len: int, bos_id: int):
    """inputs = [BOS, x_1..x_{T-1}], targets = x_1..x_T; fresh rows from rng(seed, step)."""
    targets = rows(np.random.default_rng([seed, step]), batch_size, seq_len).astype(np.int32)
    inputs = np.concatenate([np.full((batch_size, 1), bos_id, np.int32), targets[:, :-1]], axis=1)
    return inputs, targets


def token_splits(seq_len: int):
    """TokenSplits: 256 training rows (the unigram baseline only) and 256 held-out rows of another stream
    (the same for every train.seed), flat; `jaxsink.data.eval_batches` cuts them back into rows from BOS."""
    from jaxsink.data.batches import TokenSplits
    train, held = (rows(np.random.default_rng([0, 2 ** 31 + s]), HELDOUT_ROWS, seq_len).reshape(-1).astype(np.int32)
                   for s in (0, 1))
    return TokenSplits(train=train, heldout=held, heldout_bytes=len(held), train_bytes=len(train))
