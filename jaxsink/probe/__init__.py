"""`jaxsink probe`: the paper's analyses of one loaded model on real text, and their plots."""
