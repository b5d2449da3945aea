"""Table 6: attention heads (number of heads, head dimension, and d_head x n_heads fixed).

The paper's 7B rows use N_head in {8, 16, 32} at d_head 128, d_head in {8..128} at 32 heads, and
d_head/N_head from 8/512 to 256/16 at a fixed product 4096.
"""
from jaxsink.experiments import Claim, PaperRow


TITLE = "Table 6 - attention head settings"
PAPER = {
    "heads_8": PaperRow(10.4, 37.1, 1253), "heads_16": PaperRow(10.3, 41.7, 1936), "heads_32": PaperRow(10.1, 46.0, 3818),
    "dhead_8": PaperRow(11.3, 4.1, 291), "dhead_16": PaperRow(10.8, 9.8, 315), "dhead_32": PaperRow(10.5, 27.9, 829),
    "dhead_64": PaperRow(10.3, 37.7, 2112), "dhead_128": PaperRow(10.1, 46.0, 3818),
    "fixed_8x512": PaperRow(10.7, 11.0, 1205), "fixed_16x256": PaperRow(10.4, 30.8, 1750), "fixed_32x128": PaperRow(10.3, 41.1, 1916),
    "fixed_64x64": PaperRow(10.2, 44.1, 2523), "fixed_128x32": PaperRow(10.1, 46.0, 3818), "fixed_256x16": PaperRow(10.1, 52.1, 3429),
}
HEADS = (8, 16, 32)
DHEADS = (8, 16, 32, 64, 128)
FIXED = ((8, 512), (16, 256), (32, 128), (64, 64), (128, 32), (256, 16))


# Section 4.3.1 claims (Claim: text, metric, a, relation, b); judged by jaxsink.claims
CLAIMS = [
    Claim("A larger d_head raises the sink ratio (d_head 8 -> 128)", "sink_ratio", "dhead_128", ">", "dhead_8"),
    Claim("A larger d_head raises the spike", "spike", "dhead_128", ">", "dhead_8"),
    Claim("At fixed width, fewer larger heads give more sinks", "sink_ratio", "fixed_256x16", ">", "fixed_8x512"),
    Claim("At fixed width, fewer larger heads give a larger spike", "spike", "fixed_256x16", ">", "fixed_8x512"),
    Claim("Fewer heads at fixed d_head keep the sinks (37% vs 46%)", "sink_ratio", "heads_8", "kept", "heads_32"),
]


def variants(scale, base):
    """Rows are rescaled from the paper's 32 heads x 128 to the scale's base heads x d_head (tiny: 4 x 32),
    so `heads_32`, `dhead_128` and `fixed_128x32` are the base model at every scale."""
    h0, d0 = base.model.n_heads, base.model.d_head

    def row(n, d):
        return [f"model.n_heads={max(round(h0 * n / 32), 1)}", f"model.d_head={max(round(d0 * d / 128) // 2 * 2, 2)}"]
    out = {f"heads_{n}": row(n, 128) for n in HEADS}
    out.update({f"dhead_{d}": row(32, d) for d in DHEADS})
    out.update({f"fixed_{d}x{n}": row(n, d) for d, n in FIXED})
    return out
