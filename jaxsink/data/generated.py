"""Corpora generated instead of read: each training row is one sequence from BOS, drawn fresh from
rng(seed, step), and the held-out split is a fixed set of such rows. Each module has `NAME`,
`train_batch(*, seed, step, batch_size, seq_len, bos_id)` and `token_splits(seq_len)`, and its ids are bytes."""
from __future__ import annotations

from jaxsink.data import bb_guo, passkey

GENERATED = {bb_guo.NAME: bb_guo, passkey.NAME: passkey}


def generator(corpus: str):
    """The generating module of `corpus`, or None for a corpus that is read."""
    return GENERATED.get(corpus)


def row_length(corpus: str, seq_len: int) -> int:
    """The length of a generated corpus's rows (its held-out split is cut back into whole rows from BOS:
    `jaxsink.impact.runner.ImpactOptions.rows`); 0 for a corpus that is read."""
    return seq_len if generator(corpus) is not None else 0
