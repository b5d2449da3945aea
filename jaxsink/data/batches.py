"""Token splits and batches. Training batches are a pure function of (seed, step): resumes see the same data."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxsink.data.corpus import DataError


@dataclasses.dataclass
class TokenSplits:
    train: np.ndarray
    heldout: np.ndarray
    heldout_bytes: int
    train_bytes: int


def _cut(doc: str, fraction: float) -> int:
    """Where the held-out tail of a document starts: about `fraction` from the end, moved back to a line
    break (else a space) when one is near so no word is split; both sides keep >= 1 character."""
    target = max(1, min(round(len(doc) * (1 - fraction)), len(doc) - 1))
    low = max(1, target - min(200, int(len(doc) * fraction / 2)))
    for sep in ("\n", " "):
        at = doc.rfind(sep, low, target)
        if at >= 0:
            return at + 1
    return target


def split_and_encode(docs: list[str], tokenizer, heldout_fraction: float = 0.05) -> TokenSplits:
    """Held-out = the last `heldout_fraction` of EACH document, so both splits cover every document
    (a held-out set made of whole documents would measure a shift in genre, not generalisation)."""
    if not 0 < heldout_fraction < 1:
        raise DataError(f"heldout_fraction {heldout_fraction} is not in (0, 1)")
    cuts = [_cut(doc, heldout_fraction) for doc in docs]
    train_text = "\n\n".join(doc[:cut] for doc, cut in zip(docs, cuts))
    held_text = "\n\n".join(doc[cut:] for doc, cut in zip(docs, cuts))
    return TokenSplits(train=tokenizer.encode(train_text), heldout=tokenizer.encode(held_text),
                       heldout_bytes=len(held_text.encode("utf-8")), train_bytes=len(train_text.encode("utf-8")))


def train_batch(tokens: np.ndarray, *, seed: int, step: int, batch_size: int, seq_len: int, bos_id: int):
    """Random crops: inputs = [BOS] + x[s : s+T-1], targets = x[s : s+T]; rows drawn from rng(seed, step)."""
    if len(tokens) < seq_len + 1:
        raise DataError(f"corpus has {len(tokens)} tokens, shorter than one sequence of {seq_len}")
    starts = np.random.default_rng([seed, step]).integers(0, len(tokens) - seq_len + 1, size=batch_size)
    targets = np.asarray(tokens)[starts[:, None] + np.arange(seq_len)].astype(np.int32)
    inputs = np.concatenate([np.full((batch_size, 1), bos_id, np.int32), targets[:, :-1]], axis=1)
    return inputs, targets


def eval_batches(tokens: np.ndarray, *, seq_len: int, batch_size: int, bos_id: int, max_sequences: int | None = None):
    """Consecutive non-overlapping chunks of `seq_len` tokens; yields (inputs, targets, mask) batches."""
    n = len(tokens) // seq_len
    if n == 0:
        raise DataError(f"held-out text has {len(tokens)} tokens, shorter than one sequence of {seq_len}")
    if max_sequences is not None:
        n = min(n, max_sequences)
    chunks = tokens[: n * seq_len].reshape(n, seq_len).astype(np.int32)
    for start in range(0, n, batch_size):
        targets = chunks[start:start + batch_size]
        mask = np.ones(len(targets), np.int32)
        if len(targets) < batch_size:
            pad = batch_size - len(targets)
            targets = np.concatenate([targets, np.zeros((pad, seq_len), np.int32)])
            mask = np.concatenate([mask, np.zeros(pad, np.int32)])
        inputs = np.concatenate([np.full((batch_size, 1), bos_id, np.int32), targets[:, :-1]], axis=1)
        yield inputs, targets, mask


def unigram_bits_per_byte(splits: TokenSplits, vocab_size: int) -> float:
    """Bits per byte of an add-one unigram model of the training tokens on the held-out tokens (the floor
    any trained LM must beat)."""
    counts = np.bincount(splits.train, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log2(counts / counts.sum())
    bits = -logp[splits.heldout].sum()
    return float(bits / splits.heldout_bytes) if splits.heldout_bytes else math.nan
