"""Table 4: feed-forward design (SwiGLU, GeLU, single linear layer, attention-only)."""

TITLE = "Table 4 - feed-forward block design"
PAPER = {"gelu": (10.1, 69.3, 3369), "linear": (12.5, 58.9, 688), "attention": (10.8, 73.9, 637),
         "swiglu": (10.1, 46.0, 3818)}


def variants(scale, base):
    return {name: [f"model.ffn={name}"] for name in ("swiglu", "gelu", "linear", "attention")}
