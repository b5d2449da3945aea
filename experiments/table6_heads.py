"""Table 6: attention heads (number of heads, head dimension, and d_head x n_heads fixed).

The paper's 7B rows use N_head in {8, 16, 32} at d_head 128, d_head in {8..128} at 32 heads, and
d_head/N_head from 8/512 to 256/16 at a fixed product 4096. Smaller scales keep the same ratios: head
counts and dimensions are divided by the scale's factor (tiny: 8 -> 4 heads x 32 at the base).
"""

TITLE = "Table 6 - attention head settings"
PAPER = {
    "heads_8": (10.4, 37.1, 1253), "heads_16": (10.3, 41.7, 1936), "heads_32": (10.1, 46.0, 3818),
    "dhead_8": (11.3, 4.1, 291), "dhead_16": (10.8, 9.8, 315), "dhead_32": (10.5, 27.9, 829),
    "dhead_64": (10.3, 37.7, 2112), "dhead_128": (10.1, 46.0, 3818),
    "fixed_8x512": (10.7, 11.0, 1205), "fixed_16x256": (10.4, 30.8, 1750), "fixed_32x128": (10.3, 41.1, 1916),
    "fixed_64x64": (10.2, 44.1, 2523), "fixed_128x32": (10.1, 46.0, 3818), "fixed_256x16": (10.1, 52.1, 3429),
}
# paper values at 7B; `variants` rescales them
HEADS = (8, 16, 32)
DHEADS = (8, 16, 32, 64, 128)
FIXED = ((8, 512), (16, 256), (32, 128), (64, 64), (128, 32), (256, 16))
FACTOR = {"paper": 1, "small": 4, "tiny": 8}   # divide N_head (and the d_head sweep's N_head) by this


def variants(scale, base):
    f = FACTOR[scale]
    out = {}
    for n in HEADS:
        out[f"heads_{n}"] = [f"model.n_heads={max(n // f, 1)}", f"model.d_head={128 // f if scale != 'paper' else 128}"]
    for d in DHEADS:
        out[f"dhead_{d}"] = [f"model.n_heads={max(32 // f, 1)}", f"model.d_head={max(d // f, 2) if scale != 'paper' else d}"]
    for d, n in FIXED:
        dd, nn = (d, n) if scale == "paper" else (max(d // f, 2), max(n // f, 1))
        out[f"fixed_{d}x{n}"] = [f"model.n_heads={nn}", f"model.d_head={dd}"]
    return out
