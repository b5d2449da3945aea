"""Tiny model on the generated passkey-retrieval corpus (`jaxsink.data.passkey`): learns to copy a 5-digit
key from about 280 bytes back; `jaxsink.impact.passkey` then asks whether each KV-cache policy keeps it."""
from jaxsink.configs import tiny


def get_config():
    c = tiny.get_config()
    c.data.corpus = "passkey"
    # the held-out split is the tail of EVERY document (jaxsink.data.batches.split_and_encode): at the default
    # 5% that tail is the answer, so the model would never see a key recalled; keep only the final "." out
    # (retrieval is measured on generated held-out prompts instead: jaxsink.impact.passkey)
    c.data.heldout_fraction = 0.001
    c.train.seq_len = 320
    c.train.batch_size = 8
    c.train.steps = 2000
    return c
