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

# (text, figure, relation, a, b): what the variants cost a deployment (`jaxsink.bb_impact`: figures, band and
# rules there), judged over seeds; b None compares a's figure with 0. Written before the seeds were run.
IMPACT_CLAIMS = [
    ("Window-only eviction (8-token cache) costs pre-norm perplexity", "window_cost", ">", "pre", None),
    ("Keeping BOS in the cache (StreamingLLM, 1 sink) recovers pre-norm's window loss", "sink_restore", ">",
     "pre", None),
    ("Window-only eviction costs sandwich norm perplexity (it keeps the BOS sink)", "window_cost", ">",
     "sandwich", None),
    ("Window-only eviction costs sandwich norm as much as pre-norm (both keep the sink)", "window_cost", "~",
     "sandwich", "pre"),
    ("Sandwich norm loses less perplexity than pre-norm under per-tensor A4", "a4_tensor_cost", "<", "sandwich", "pre"),
    ("Sandwich norm loses less perplexity than pre-norm under per-tensor A8", "a8_tensor_cost", "<", "sandwich", "pre"),
    ("Sandwich + QK-norm loses less perplexity than pre-norm under per-tensor A4", "a4_tensor_cost", "<",
     "sandwich_qk", "pre"),
    ("DynamicTanh loses less perplexity than pre-norm under per-tensor A4", "a4_tensor_cost", "<", "dyt", "pre"),
    ("Keeping BOS exact recovers part of pre-norm's per-tensor A4 loss", "a4_tensor_keep_gain", ">", "pre", None),
    ("Per-token A4 loses less than per-tensor A4 in pre-norm", "a4_tensor_over_token", ">", "pre", None),
]


def variants(scale, base):
    rows = table5_norm.variants(scale, base)
    return {k: rows[k] for k in PAPER}
