"""Tiny model on the generated passkey-retrieval corpus (`jaxsink.data.passkey`): learns to copy a 5-digit
key from about 280 bytes back; `jaxsink.impact.passkey` then asks whether each KV-cache policy keeps it."""
from jaxsink.configs import tiny


def get_config():
    c = tiny.get_config()
    c.data.corpus = "passkey"
    c.train.seq_len = 320
    c.train.batch_size = 8
    c.train.steps = 2000
    return c
