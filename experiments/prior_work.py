"""Prior-work attention variants: sigmoid without normalisation and learnable key/value biases remove
sinks and spikes (Gu et al. 2025; Sun et al. 2024); a learnable sink logit and softmax-off-by-one give the
heads somewhere else to put their mass (gpt-oss; Miller 2023)."""
from jaxsink.experiments import Claim


TITLE = "Prior work - attention normalisers and biases"
PAPER = {}


# prior-work claims (Claim: text, metric, a, relation, b); judged by jaxsink.claims
CLAIMS = [
    Claim("Sigmoid attention without normalisation has no sinks (Gu et al. 2025)", "sink_ratio", "sigmoid", "<", "softmax"),
    Claim("Learnable key/value biases remove the massive activation (Sun et al. 2024)", "spike", "kv_bias", "<", "softmax"),
    Claim("Without normalisation no massive activation forms (Gu et al. 2025; confounded: an unnormalised "
          "output sums about t/2 value vectors, so |h| grows with position)", "spike", "sigmoid", "<", "softmax"),
    Claim("A learnable sink logit takes the place of sink heads (gpt-oss)", "sink_ratio", "sink_logit", "<", "softmax"),
]


def variants(scale, base):
    return {kind: [f"model.attention={kind}"]
            for kind in ("softmax", "sigmoid", "sink_logit", "softmax1", "k_bias", "kv_bias")}
