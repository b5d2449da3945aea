"""Tiny model on the generated passkey-retrieval corpus (`jaxsink.data.passkey`): learns to copy a 5-digit
key from up to about 280 bytes back; `jaxsink.impact.passkey` then asks whether each KV-cache policy keeps it."""
from jaxsink.configs import tiny


def get_config():
    c = tiny.get_config()
    c.data.corpus = "passkey"
    c.train.seq_len = 384        # a held-out-length document (321 bytes) and one repeat of the answer
    c.train.batch_size = 8
    c.train.steps = 5000
    return c
