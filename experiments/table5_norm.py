"""Table 5: normalisation configuration (+ post-norm and no norm as extensions)."""

TITLE = "Table 5 - normalisation configuration"
PAPER = {"pre": (10.1, 46.0, 3818), "sandwich": (9.8, 44.7, 520), "sandwich_qk": (10.0, 42.0, 92),
         "dyt": (10.0, 61.0, 153)}


def variants(scale, base):
    return {
        "pre": ["model.norm_placement=pre"],
        "sandwich": ["model.norm_placement=sandwich"],
        "sandwich_qk": ["model.norm_placement=sandwich_qk"],
        "dyt": ["model.norm_placement=pre", "model.norm_type=dyt"],
        "post": ["model.norm_placement=post"],
        "none": ["model.norm_placement=none"],
    }
