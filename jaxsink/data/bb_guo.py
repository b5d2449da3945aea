"""Guo et al. 2024's Bigram-Backcopy task exactly as their code generates it (arXiv 2410.13835, §2;
GuoTianYu2000/Active-Dormant-Attention, `BBM/data.py`, class `bbm`), as the corpus `bb_guo`.

Each training sequence is generated independently from BOS: x_1 follows the character marginal with the
triggers removed; afterwards, if x_{i-1} is a trigger the next token copies x_{i-2} (the token before the
trigger), otherwise it follows the bigram transition matrix. The 65 characters are TinyShakespeare's
alphabet; the bigram matrix and the marginal are estimated from the shipped Shakespeare plays (pairs with a
character outside the alphabet are skipped); the triggers are the k = 3 most frequent characters (space,
'e', 't'), as in their `fixed_special_toks`. Their vocabulary is 65 characters + BOS + a delimiter that
never occurs (delimiter_p = 0); here a token is the character's byte (jaxsink's byte tokenizer, BOS = 256),
so the model's vocabulary is larger (264) but only these 66 ids ever occur.

Unlike the `bigram_backcopy` corpus (random crops of long chains), every row of a batch starts at BOS, and
batches are drawn fresh at every step (infinite data, as in their trainer), a pure function of (seed, step).
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

# TinyShakespeare's 65 characters in their index order (sorted), Guo et al.'s `meta.pkl`
ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
NAME = "bb_guo"
K_TRIGGERS = 3


@dataclasses.dataclass(frozen=True)
class GuoTask:
    """Transition rows `cond` [V, V] over alphabet indices, the start distribution (marginal without the
    triggers) and the trigger indices; `byte_ids` maps an alphabet index to its token id."""
    cond: np.ndarray
    start: np.ndarray
    triggers: tuple[int, ...]
    byte_ids: np.ndarray

    @property
    def trigger_ids(self) -> tuple[int, ...]:
        return tuple(int(self.byte_ids[i]) for i in self.triggers)


def estimate(text: str, k: int = K_TRIGGERS) -> GuoTask:
    """Bigram counts and unigram marginal of `text` over ALPHABET (float64). A character that is never
    followed by an alphabet character gets the marginal as its row."""
    v = len(ALPHABET)
    lookup = np.full(0x110000, -1, np.int64)
    lookup[[ord(c) for c in ALPHABET]] = np.arange(v)
    ids = lookup[np.frombuffer(text.encode("utf-32-le"), np.uint32)]
    marginal = np.bincount(ids[ids >= 0], minlength=v).astype(np.float64)
    marginal /= marginal.sum()
    a, b = ids[:-1], ids[1:]
    keep = (a >= 0) & (b >= 0)
    counts = np.bincount(a[keep] * v + b[keep], minlength=v * v).reshape(v, v).astype(np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    cond = np.where(rows > 0, counts / np.maximum(rows, 1), marginal[None, :])
    triggers = tuple(sorted(int(i) for i in np.argsort(marginal, kind="stable")[v - k:]))
    start = marginal.copy()
    start[list(triggers)] = 0
    return GuoTask(cond=cond, start=start / start.sum(), triggers=triggers,
                   byte_ids=np.array([ord(c) for c in ALPHABET], np.int32))


@functools.lru_cache(maxsize=1)
def shipped_task() -> GuoTask:
    """The task estimated from the shipped Shakespeare plays (deterministic; cached per process)."""
    from jaxsink.data.corpus import shakespeare
    return estimate("\n\n".join(shakespeare()))


def generate(task: GuoTask, uniforms: np.ndarray) -> np.ndarray:
    """Sequences x_1..x_T (alphabet indices, [N, T]) from uniforms [N, T] in [0, 1): each draw is the
    inverse CDF of its row at its uniform; a token after a trigger is the copy, its uniform unused."""
    n, t = uniforms.shape
    cum = np.cumsum(task.cond, axis=1)
    cum[:, -1] = 1.0
    start_cum = np.cumsum(task.start)
    start_cum[-1] = 1.0
    is_trigger = np.zeros(len(task.cond), bool)
    is_trigger[list(task.triggers)] = True
    out = np.empty((n, t), np.int64)
    out[:, 0] = np.searchsorted(start_cum, uniforms[:, 0], side="right")
    for i in range(1, t):
        prev = out[:, i - 1]
        drawn = (cum[prev] <= uniforms[:, i, None]).sum(axis=1)
        copy = out[:, i - 2] if i >= 2 else drawn
        out[:, i] = np.where(is_trigger[prev] & (i >= 2), copy, np.minimum(drawn, len(cum) - 1))
    return out


def sequences(task: GuoTask, rng: np.random.Generator, n: int, seq_len: int) -> np.ndarray:
    """n sequences of token ids [n, seq_len] (x_1..x_T, BOS not included)."""
    return task.byte_ids[generate(task, rng.random((n, seq_len)))]


def train_batch(*, seed: int, step: int, batch_size: int, seq_len: int, bos_id: int, task: GuoTask | None = None):
    """inputs = [BOS, x_1..x_{T-1}], targets = x_1..x_T: Guo et al.'s (x[:, :-1], x[:, 1:]) of a sequence
    [BOS, x_1..x_T]; fresh sequences from rng(seed, step) (held-out sequences use another stream)."""
    task = task or shipped_task()
    targets = sequences(task, np.random.default_rng([seed, step]), batch_size, seq_len).astype(np.int32)
    inputs = np.concatenate([np.full((batch_size, 1), bos_id, np.int32), targets[:, :-1]], axis=1)
    return inputs, targets


def fixed_sequences(seed: int, n: int, seq_len: int, stream: int) -> np.ndarray:
    """n sequences of `seq_len` tokens concatenated (flat): the held-out (stream 1) and a training sample
    (stream 0) that `jaxsink.data.eval_batches` cuts back into whole BOS-started sequences."""
    rng = np.random.default_rng([seed, 2 ** 31 + stream])
    return sequences(shipped_task(), rng, n, seq_len).reshape(-1).astype(np.int32)


HELDOUT_SEQUENCES = 256


def token_splits(seq_len: int):
    """TokenSplits of the generated task: a training sample (for the unigram baseline only; training
    batches come from `train_batch`) and 256 held-out sequences, the same for every train.seed (so seeds
    are compared on one held-out set); one byte per token."""
    from jaxsink.data.batches import TokenSplits
    train = fixed_sequences(0, HELDOUT_SEQUENCES, seq_len, stream=0)
    held = fixed_sequences(0, HELDOUT_SEQUENCES, seq_len, stream=1)
    return TokenSplits(train=train, heldout=held, heldout_bytes=len(held), train_bytes=len(train))
