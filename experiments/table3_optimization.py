"""Table 3: optimisation hyperparameters (base LR, min LR, weight decay, AdamW beta2, training tokens)."""
from jaxsink.experiments import Claim, PaperRow


TITLE = "Table 3 - optimisation hyperparameters"
PAPER = {
    "lr_x0.25": PaperRow(11.8, 18.6, 1447), "lr_x0.5": PaperRow(10.7, 31.8, 2251), "baseline": PaperRow(10.1, 46.0, 3818),
    "lr_x2": PaperRow(10.0, 51.5, 3773), "lr_x4": PaperRow(10.2, 39.2, 2723), "no_lr_decay": PaperRow(10.7, 56.8, 2870),
    "wd_0": PaperRow(10.4, 33.8, 12275), "beta2_0.9": PaperRow(10.1, 49.0, 2832), "beta2_0.999": PaperRow(10.7, 20.9, 1855),
    "tokens_x2": PaperRow(9.5, 63.3, 1848),
}


# Section 4.1 claims (Claim: text, metric, a, relation, b); judged by jaxsink.claims
CLAIMS = [
    Claim("A 4x lower base LR lowers the sink ratio", "sink_ratio", "lr_x0.25", "<", "baseline"),
    Claim("A 4x lower base LR lowers the spike", "spike", "lr_x0.25", "<", "baseline"),
    Claim("A 4x higher base LR lowers the sink ratio", "sink_ratio", "lr_x4", "<", "baseline"),
    Claim("No LR decay raises the sink ratio", "sink_ratio", "no_lr_decay", ">", "baseline"),
    Claim("Weight decay 0 raises the spike (3x)", "spike", "wd_0", ">", "baseline"),
    Claim("Weight decay 0 lowers the sink ratio", "sink_ratio", "wd_0", "<", "baseline"),
    Claim("AdamW beta2 0.999 lowers the sink ratio", "sink_ratio", "beta2_0.999", "<", "baseline"),
    Claim("2x training tokens raise the sink ratio", "sink_ratio", "tokens_x2", ">", "baseline"),
    Claim("2x training tokens lower the spike", "spike", "tokens_x2", "<", "baseline"),
]


def variants(scale, base):
    """LR multiples are relative to the scale's base LR (paper: 7.5e-5 ... 1.2e-3 around 3e-4). The paper's
    baseline decays the LR to 0.1x (min LR 3e-5), so every row but `no_lr_decay` does, whatever the base."""
    lr, steps = base.train.lr, base.train.steps
    rows = {
        "baseline": [],
        "lr_x0.25": [f"train.lr={lr / 4}"], "lr_x0.5": [f"train.lr={lr / 2}"],
        "lr_x2": [f"train.lr={lr * 2}"], "lr_x4": [f"train.lr={lr * 4}"],
        "wd_0": ["train.weight_decay=0.0"],
        "beta2_0.9": ["train.b2=0.9"], "beta2_0.999": ["train.b2=0.999"],
        "tokens_x2": [f"train.steps={steps * 2}"],
    }
    rows = {name: ["train.min_lr_ratio=0.1", *o] for name, o in rows.items()}
    return {**rows, "no_lr_decay": ["train.min_lr_ratio=1.0"]}
