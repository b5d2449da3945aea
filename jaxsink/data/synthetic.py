"""Generated corpora with a known mechanism, for checking the sink/spike story where text is too slow.

`bigram_backcopy` is the Bigram-Backcopy task of Guo et al. 2024 ("Active-dormant attention heads",
arXiv 2410.13835): a Markov chain over 64 symbols, except that after one of 3 trigger symbols the next
symbol copies the one before the trigger. Predicting it needs attention only at triggers (about 1 position
in 20); everywhere else an attention head has nothing useful to read, which is the situation in which
sink heads (a no-op on the first token) appear within a few hundred steps in small models.
"""
from __future__ import annotations

import bisect
import string

import numpy as np

ALPHABET = string.ascii_letters + string.digits + "+-"    # 64 one-byte symbols, no spaces or newlines
TRIGGERS = "012"


def bigram_backcopy(n_docs: int = 256, doc_chars: int = 8192, seed: int = 0, concentration: float = 0.3) -> list[str]:
    """Documents of `doc_chars` symbols. Transition rows are Dirichlet(`concentration`) (peaked, so the
    bigram part is learnable); a trigger's successor is the symbol before the trigger. Deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    v = len(ALPHABET)
    trigger = [c in TRIGGERS for c in ALPHABET]
    cumulative = np.cumsum(rng.dirichlet(np.full(v, concentration), size=v), axis=1)
    rows = [list(row) for row in cumulative]
    docs = []
    for _ in range(n_docs):
        u = rng.random(doc_chars).tolist()
        # a non-trigger start: then a trigger is never followed by a trigger (the copy is not a trigger)
        ids = [int(rng.choice([j for j in range(v) if not trigger[j]]))]
        for i in range(1, doc_chars):
            prev = ids[-1]
            if trigger[prev] and i >= 2:
                ids.append(ids[-2])
            else:
                ids.append(min(bisect.bisect_right(rows[prev], u[i]), v - 1))
        docs.append("".join(ALPHABET[j] for j in ids))
    return docs
