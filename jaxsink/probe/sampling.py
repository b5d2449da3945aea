"""Which held-out windows the probe reads. The paper samples C4 documents at random; the first version of the
probe took the first `num` consecutive chunks (about 4 KB of one or two plays). Here the windows are `num`
distinct non-overlapping chunks drawn at random (seeded) from every chunk the whole split holds, kept in
text order; their number, the seed and the chunk indices go into probe.json."""
from __future__ import annotations

import dataclasses

import numpy as np

from jaxsink.data import DataError
from jaxsink.probe.result import ProbeSample


@dataclasses.dataclass(frozen=True)
class Sample:
    """The probe's windows [n, seq_len] and how they were drawn."""
    tokens: np.ndarray
    method: str
    seed: int
    chunks: list[int]
    available: int

    def record(self) -> ProbeSample:
        return ProbeSample(method=self.method, seed=self.seed, windows=int(len(self.tokens)),
                           available_chunks=self.available, chunk_indices=self.chunks)


def sample_windows(ids, seq_len: int, num: int, bos: bool, bos_id: int | None, *, seed: int = 0,
                   method: str = "random") -> Sample:
    """`num` windows of `seq_len` tokens from the token ids of the split; with BOS each holds seq_len - 1 text
    tokens after BOS. method "random": distinct chunks drawn with numpy's default_rng(seed) over all
    len(ids) // body chunks; "consecutive": the first `num` chunks (the old behaviour)."""
    ids = np.asarray(ids, np.int32)
    body = seq_len - 1 if bos else seq_len
    available = len(ids) // body
    if available == 0:
        raise DataError(f"probe text has {len(ids)} tokens, fewer than one sequence of {seq_len}")
    n = min(available, num)
    if method == "random":
        chunks = np.sort(np.random.default_rng(seed).choice(available, size=n, replace=False))
    elif method == "consecutive":
        chunks = np.arange(n)
    else:
        raise ValueError(f"unknown probe sample {method!r}: random or consecutive")
    windows = ids[: available * body].reshape(available, body)[chunks]
    if bos:
        windows = np.concatenate([np.full((n, 1), bos_id, np.int32), windows], axis=1)
    return Sample(windows, method, int(seed), [int(c) for c in chunks], int(available))
