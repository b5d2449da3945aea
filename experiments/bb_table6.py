"""Table 6 on Guo et al.'s Bigram-Backcopy testbed (`--scale bb`): does the head dimension drive the BOS sink
(§4.3.1: d_head 8 -> 128 raises the sink ratio 4% -> 46%)? 2 layers x 4 heads, d_head 8, 16, 32 or 64 (the base
width stays); judged over seeds by `python -m jaxsink.bb_seeds bb_table6`."""
from jaxsink.experiments import Claim, PaperRow

TITLE = "Table 6 on Bigram-Backcopy - head dimension (2 layers x 4 heads)"
DHEADS = (8, 16, 32, 64)
PAPER = {"dhead_8": PaperRow(11.3, 4.1, 291), "dhead_16": PaperRow(10.8, 9.8, 315),
         "dhead_64": PaperRow(10.3, 37.7, 2112)}
CLAIMS = [Claim("A larger d_head raises the sink ratio (d_head 8 -> 64)", "sink_ratio", "dhead_64", ">", "dhead_8"),
          Claim("A larger d_head raises the spike", "spike", "dhead_64", ">", "dhead_8")]

BOS_CLAIMS = [
    ("A larger d_head gives more BOS-sink attention (d_head 64 vs 8)", "more_sink", "dhead_64", "dhead_8"),
    ("A larger d_head gives more BOS-sink attention (d_head 64 vs 16)", "more_sink", "dhead_64", "dhead_16"),
    ("A larger d_head gives a larger massive activation (64 vs 8)", "cuts_spike", "dhead_8", "dhead_64"),
]


def variants(scale, base):
    return {f"dhead_{d}": ["model.n_layers=2", "model.n_heads=4", f"model.d_head={d}"] for d in DHEADS}
