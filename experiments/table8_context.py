"""Table 8: training context: the loss is computed on positions [min, max) of max-long sequences only.

Paper rows min/max at 7B (context 4096). Smaller scales divide both by the scale's factor so the longest
row still fits the base sequence length budget (tiny: /32 -> 1/128 is the baseline).
"""
from jaxsink.experiments import Claim, PaperRow


TITLE = "Table 8 - training context length (loss position range)"
ROWS = ((1, 256), (1, 1024), (1, 4096), (1024, 4096), (1024, 5120), (2048, 4096), (2048, 6144))
PAPER = {"1/256": PaperRow(12.4, 42.1, 5411), "1/1024": PaperRow(10.6, 46.3, 4442), "1/4096": PaperRow(10.1, 46.0, 3818),
         "1024/4096": PaperRow(10.1, 13.0, 38470), "1024/5120": PaperRow(10.1, 8.0, 42365), "2048/4096": PaperRow(10.6, 1.2, 7193),
         "2048/6144": PaperRow(10.0, 5.8, 30634)}
FACTOR = {"paper": 1, "small": 4, "tiny": 32}


# Section 4.3.3 claims (Claim: text, metric, a, relation, b); judged by jaxsink.claims
CLAIMS = [
    Claim("Excluding short contexts from the loss collapses the sinks", "sink_ratio", "2048/4096", "<", "1/4096"),
    Claim("Excluding short contexts from the loss grows the spike (10x)", "spike", "1024/4096", ">", "1/4096"),
    Claim("With short contexts in the loss, sinks stay at any maximum length", "sink_ratio", "1/256", "kept", "1/4096"),
]


def variants(scale, base):
    f = FACTOR[scale]
    out = {}
    for lo, hi in ROWS:
        start, length = (lo - 1) // f, hi // f
        out[f"{lo}/{hi}"] = [f"train.seq_len={length}", f"train.loss_start={start}",
                             f"model.max_seq_len={max(base.model.max_seq_len, length)}",
                             # keep tokens per step fixed: batch x seq_len = base batch x base seq_len
                             f"train.batch_size={max(base.train.batch_size * base.train.seq_len // length, 1)}"]
    return out
