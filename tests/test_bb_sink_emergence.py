"""The BOS sink of Guo et al.'s Bigram-Backcopy task forms on CPU within a stated number of steps, and does
not form under their control, ReLU attention (which can shut a head off without a sink: all logits <= 0).

Reduced testbed `configs/bb_cpu.py` (width 64, one head, sequences of 64, batch 16, lr 3e-3); the threshold
0.5 on non-trigger queries' attention on BOS is Guo et al.'s. Measured (docs/tiny_recipe.md): the sink
passes 0.5 at about step 250-300 and reads about 0.7 at step 400, while uniform attention reads 0.074.
"""
import jax
import pytest

from jaxsink.bb_seeds import bos_metrics
from jaxsink.config import load_config
from jaxsink.train.setup import Run
from jaxsink.train.step import make_train_step

STEPS = 400


def _trained(tmp_path, overrides):
    cfg = load_config("bb_cpu", [f"train.steps={STEPS}", *overrides])
    run = Run.create(cfg, tmp_path, devices=jax.devices()[:1])   # one device: no collectives to wait on
    state, shardings = run.init_state(), run.state_shardings()
    replicated = jax.sharding.NamedSharding(run.mesh, jax.sharding.PartitionSpec())
    step = jax.jit(make_train_step(run.graphdef, run.optimizer, cfg.train), donate_argnums=0,
                   in_shardings=(shardings, run.batch_sharding()), out_shardings=(shardings, replicated))
    with jax.set_mesh(run.mesh):
        for s in range(STEPS):
            state, _ = step(state, run.train_batch(s))
    return bos_metrics(run, state["params"], n=32)


@pytest.mark.slow
def test_bos_sink_forms_by_step_400_and_not_with_relu_attention(tmp_path):
    softmax = _trained(tmp_path / "softmax", [])
    relu = _trained(tmp_path / "relu", ["model.attention=relu"])
    assert softmax["bos_attention"] > 0.5, softmax
    assert relu["bos_attention"] < 0.2, relu
    assert softmax["loss"] < 2.1 and relu["loss"] < 2.1      # both learned the task (bigram floor ~1.9-2.0)
