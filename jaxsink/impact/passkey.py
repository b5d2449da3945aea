"""Passkey retrieval under a KV-cache policy: does the model still copy the key once the cache is bounded?

Prompts come from `jaxsink.data.passkey` (the generated corpus a tiny model learns: `configs/tiny_passkey.py`).
A prompt counts as retrieved when greedy next-token prediction gets every answer token right while the
prompt and answer (the 5-digit key) are decoded token by token under the policy (teacher forcing).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxsink.data.passkey import passkey_document
from jaxsink.impact import kvcache
from jaxsink.impact.result import _Row


@dataclasses.dataclass
class PasskeyRow(_Row):
    policy: str               # CachePolicy.label ("full" for the whole cache)
    kind: str
    budget: int
    sinks: int
    recent: int
    accuracy: float           # share of prompts with every answer token right (greedy, teacher forcing)
    answer_perplexity: float  # exp(mean NLL of the answer tokens)


def prompts(tokenizer, bos: bool, n: int, filler_sentences: int, seed: int = 1):
    """(token ids [n, T], answer start) of n prompts + keys; byte-level prompts share one length."""
    rng = np.random.default_rng(seed)
    rows, starts = [], []
    for _ in range(n):
        prompt, answer = passkey_document(rng, filler_sentences)
        answer = answer.removesuffix(".")   # the answer scored is the key itself
        ids = list(tokenizer.encode(prompt + answer))
        ids = ([tokenizer.bos_id] if bos else []) + ids
        rows.append(ids)
        starts.append(len(ids) - len(tokenizer.encode(answer)))
    if len({len(r) for r in rows}) != 1 or len(set(starts)) != 1:
        raise ValueError("passkey prompts differ in length under this tokenizer; use a byte-level model")
    return np.asarray(rows, np.int32), starts[0]


def retrieval_accuracy(graphdef, params, tokens, start: int, policy: kvcache.CachePolicy) -> float:
    """Share of prompts whose answer tokens (positions start..T-1) are all predicted greedily."""
    return evaluate(graphdef, params, tokens, start, policy)[0]


def evaluate(graphdef, params, tokens, start: int, policy: kvcache.CachePolicy) -> tuple[float, float]:
    """(retrieval accuracy, answer perplexity) from one decode under `policy`."""
    logits = jax.jit(lambda p, t: kvcache.decode(graphdef, p, t, policy))(params, jnp.asarray(tokens))
    answer = np.asarray(jax.nn.log_softmax(logits[:, start - 1:-1].astype(jnp.float32), -1))
    pred = answer.argmax(-1)
    nll = -np.take_along_axis(answer, tokens[:, start:, None], -1).mean()
    return float(np.mean(np.all(pred == tokens[:, start:], axis=1))), float(np.exp(nll))


def run(model, params, policies, n: int, filler_sentences: int, bos: bool, bar=None) -> list[PasskeyRow]:
    """Accuracy and answer perplexity of n held-out prompts (rng(1); training rows use rng(seed, step)) under the full
    cache and each policy; a budget must be below the prompt length (else it is the full cache)."""
    tokens, start = prompts(model.tokenizer, bos, n, filler_sentences)
    too_long = [p.budget for p in policies if p.budget >= tokens.shape[1]]
    if too_long:
        raise kvcache.CacheError(f"passkey: budgets {too_long} are not below the prompt length {tokens.shape[1]}")
    rows = []
    for policy in [kvcache.CachePolicy("full", tokens.shape[1])] + list(policies):
        acc, ppl = evaluate(model.graphdef, params, tokens, start, policy)
        rows.append(PasskeyRow(policy.label, policy.kind, policy.budget, policy.sinks, policy.recent, acc, ppl))
        if bar is not None:
            bar.update()
    return rows
