"""Passkey retrieval under a KV-cache policy: does the model still copy the key once the cache is bounded?

Prompts come from `jaxsink.data.passkey` (the generated corpus a tiny model learns: `configs/tiny_passkey.py`).
A prompt counts as retrieved when greedy next-token prediction gets every answer token right while the
prompt and answer are decoded token by token under the policy (teacher forcing).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxsink.data.passkey import passkey_document
from jaxsink.impact import kvcache


def prompts(tokenizer, bos: bool, n: int, filler_sentences: int, seed: int = 1):
    """(token ids [n, T], answer start) of n prompts + answers; byte-level prompts share one length."""
    rng = np.random.default_rng(seed)
    rows, starts = [], []
    for _ in range(n):
        prompt, answer = passkey_document(rng, filler_sentences)
        ids = list(tokenizer.encode(prompt + answer))
        ids = ([tokenizer.bos_id] if bos else []) + ids
        rows.append(ids)
        starts.append(len(ids) - len(tokenizer.encode(answer)))
    if len({len(r) for r in rows}) != 1 or len(set(starts)) != 1:
        raise ValueError("passkey prompts differ in length under this tokenizer; use a byte-level model")
    return np.asarray(rows, np.int32), starts[0]


def retrieval_accuracy(graphdef, params, tokens, start: int, policy: kvcache.CachePolicy) -> float:
    """Share of prompts whose answer tokens (positions start..T-1) are all predicted greedily."""
    logits = kvcache.decode(graphdef, params, jnp.asarray(tokens), policy)
    pred = np.asarray(jnp.argmax(logits[:, start - 1:-1], -1))
    return float(np.mean(np.all(pred == tokens[:, start:], axis=1)))
