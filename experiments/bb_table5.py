"""Table 5 on Guo et al.'s Bigram-Backcopy testbed (`--scale bb`, `configs/bb_cpu.py`): does sandwich norm,
sandwich + QK-norm or DynamicTanh keep the BOS sink while removing its massive activation (the paper's
decoupling, §4.2.2)? Judged over seeds by `python -m jaxsink.bb_seeds bb_table5`."""
from jaxsink.experiments import table5_norm

TITLE = "Table 5 on Bigram-Backcopy - normalisation: BOS sink kept, massive activation removed?"
PAPER = {k: table5_norm.PAPER[k] for k in ("pre", "sandwich", "sandwich_qk", "dyt")}
CLAIMS = [c for c in table5_norm.CLAIMS if c[2] in PAPER and c[4] in PAPER]   # for `jaxsink sweep`

# (text, kind, a, b): judged on the BOS metrics over seeds by jaxsink.bb_seeds (rules there)
BOS_CLAIMS = [
    ("Sandwich norm keeps the BOS sink", "keeps_sink", "sandwich", "pre"),
    ("Sandwich norm removes the massive activation on BOS", "cuts_spike", "sandwich", "pre"),
    ("Sandwich + QK-norm keeps the BOS sink", "keeps_sink", "sandwich_qk", "pre"),
    ("Sandwich + QK-norm removes the massive activation on BOS", "cuts_spike", "sandwich_qk", "pre"),
    ("DynamicTanh keeps the BOS sink", "keeps_sink", "dyt", "pre"),
    ("DynamicTanh removes the massive activation on BOS", "cuts_spike", "dyt", "pre"),
]


def variants(scale, base):
    rows = table5_norm.variants(scale, base)
    return {k: rows[k] for k in PAPER}
