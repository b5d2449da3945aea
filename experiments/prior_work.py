"""Prior-work attention variants: sigmoid without normalisation and learnable key/value biases remove
sinks and spikes (Gu et al. 2025; Sun et al. 2024); a learnable sink logit and softmax-off-by-one give the
heads somewhere else to put their mass (gpt-oss; Miller 2023)."""

TITLE = "Prior work - attention normalisers and biases"
PAPER = {}


def variants(scale, base):
    return {kind: [f"model.attention={kind}"]
            for kind in ("softmax", "sigmoid", "sink_logit", "softmax1", "k_bias", "kv_bias")}
