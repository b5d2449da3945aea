"""CheckpointStore (resharding, keep-N, fallback past unreadable checkpoints) and the workdir lock."""
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxsink.train.checkpoint import CheckpointError, CheckpointStore
from jaxsink.workdir import WorkdirLocked, workdir_lock

# A deliberately failed restore leaves tensorstore callbacks aimed at Orbax's closed event loop: noise only.
pytestmark = pytest.mark.filterwarnings(
    "ignore:(?s)Exception ignored in.*Event loop is closed:pytest.PytestUnraisableExceptionWarning")

CONFIG = {"model": {"d_model": 64, "n_layers": 2}, "train": {"lr": 0.001}}
TESTS = pathlib.Path(__file__).parent


def make_mesh(n):
    return jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:n])


def sharding_of(x, mesh):
    """Matrices split over `data` by rows, everything else replicated."""
    return NamedSharding(mesh, P("data") if np.ndim(x) == 2 else P())


def make_state(mesh, seed=0):
    """params + an AdamW state after one update (non-zero moments), laid out on `mesh`."""
    w = jax.random.normal(jax.random.key(seed), (8, 64))
    params = {"w": w, "b": jnp.arange(64, dtype=jnp.float32) + seed}
    opt = optax.adamw(1e-3)
    updates, opt_state = opt.update(params, opt.init(params), params)
    state = {"params": optax.apply_updates(params, updates), "opt_state": opt_state, "step": jnp.int32(seed)}
    return jax.tree.map(lambda x: jax.device_put(x, sharding_of(x, mesh)), state)


def abstract(mesh):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding_of(x, mesh)),
                        jax.eval_shape(lambda: make_state(make_mesh(1))))


def assert_same(restored, expected, mesh):
    for r, e in zip(jax.tree.leaves(restored), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(r), np.asarray(e))
        assert r.dtype == e.dtype
        assert r.sharding.is_equivalent_to(sharding_of(r, mesh), r.ndim)


def save_steps(directory, steps, *, keep=3, mesh=None):
    mesh = mesh or make_mesh(8)
    store = CheckpointStore(directory, keep=keep, async_save=False)
    for s in steps:
        assert store.save(s, make_state(mesh, s), config=CONFIG, extra={"data_position": 10 * s})
    store.close()


def snapshot(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def data_files(step_dir):
    """The OCDBT data files of the arrays (small values live inline in the b-tree nodes stored here too)."""
    files = sorted((step_dir / "state" / "d").iterdir())
    assert files, f"no data files under {step_dir}/state/d"
    return files


def truncate(step_dir):
    for f in data_files(step_dir):
        os.truncate(f, f.stat().st_size // 2)


def delete(step_dir):
    for f in data_files(step_dir):
        f.unlink()


def flip_byte(step_dir):
    for f in data_files(step_dir):
        raw = bytearray(f.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        f.write_bytes(bytes(raw))


def test_reshard_8_devices_to_1_and_back(tmp_path):
    """Saved on an 8-device mesh, restored in a 1-device process; saved there, restored on 8 devices."""
    mesh8 = make_mesh(8)
    save_steps(tmp_path / "from8", [3], mesh=mesh8)
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(TESTS)!r})
        import jax, test_checkpoint as t
        assert jax.device_count() == 1
        mesh = t.make_mesh(1)
        store = t.CheckpointStore({str(tmp_path / "from8")!r})
        state, config, extra = store.restore(t.abstract(mesh))
        t.assert_same(state, t.make_state(mesh, 3), mesh)
        assert config == t.CONFIG and extra == {{"data_position": 30}}, (config, extra)
        store.close()
        t.save_steps({str(tmp_path / "from1")!r}, [5], mesh=mesh)
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = CheckpointStore(tmp_path / "from1")
    state, _, _ = store.restore(abstract(mesh8))
    assert_same(state, make_state(mesh8, 5), mesh8)
    assert len(state["params"]["w"].sharding.device_set) == 8
    store.close()


def test_keep_n_config_and_extra(tmp_path):
    mesh = make_mesh(8)
    store = CheckpointStore(tmp_path, keep=2)  # async saves
    for s in (1, 2, 3, 4):
        assert store.save(s, make_state(mesh, s), config=CONFIG, extra={"data_position": 10 * s})
    store.wait()
    assert store.all_steps() == [3, 4] and store.latest_step() == 4
    state, config, extra = store.restore(abstract(mesh))
    assert_same(state, make_state(mesh, 4), mesh)
    assert config == CONFIG and extra == {"data_position": 40}
    assert store.restore(abstract(mesh), step=3)[2] == {"data_position": 30}
    with pytest.raises(CheckpointError, match="no checkpoint of step 1 in"):
        store.restore(abstract(mesh), step=1)
    store.close()


def test_async_save_survives_donation_of_the_saved_arrays(tmp_path):
    """The loop donates the state to the next step right after save(): the save must not read it later."""
    mesh = make_mesh(8)
    store = CheckpointStore(tmp_path)
    state = make_state(mesh, 2)
    store.save(2, state, config=CONFIG)
    for x in jax.tree.leaves(state):
        x.delete()
    store.wait()
    assert_same(store.restore(abstract(mesh))[0], make_state(mesh, 2), mesh)
    store.close()


def test_empty_directory(tmp_path):
    store = CheckpointStore(tmp_path / "ckpt")
    assert store.latest_step() is None and store.all_steps() == []
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        store.restore(abstract(make_mesh(1)))
    store.close()


def test_interrupted_save_is_not_a_step(tmp_path):
    """Orbax writes into `<step>.orbax-checkpoint-tmp-*` and renames when done: a killed save leaves only that."""
    save_steps(tmp_path, [1, 2])
    partial = tmp_path / "3.orbax-checkpoint-tmp-1700000000000000"
    shutil.copytree(tmp_path / "2", partial)
    delete(partial)
    store = CheckpointStore(tmp_path)
    assert store.all_steps() == [1, 2] and store.latest_step() == 2
    assert store.restore(abstract(make_mesh(8)))[2] == {"data_position": 20}
    store.close()
    assert partial.is_dir()


@pytest.mark.parametrize("corrupt", [truncate, delete, flip_byte])
def test_unreadable_latest_falls_back_and_is_kept(tmp_path, caplog, corrupt):
    save_steps(tmp_path, [1, 2])
    corrupt(tmp_path / "2")
    before = snapshot(tmp_path)
    mesh = make_mesh(8)
    store = CheckpointStore(tmp_path)
    with caplog.at_level(logging.WARNING, logger="jaxsink"):
        state, _, extra = store.restore(abstract(mesh))
    assert_same(state, make_state(mesh, 1), mesh)
    assert extra == {"data_position": 10}
    warnings = [r.getMessage() for r in caplog.records if r.name == "jaxsink"]
    assert len(warnings) == 1 and "checkpoint step 2 " in warnings[0] and "falling back to step 1" in warnings[0]
    assert "\n" not in warnings[0]
    store.close()
    assert snapshot(tmp_path) == before  # nothing deleted or modified
    assert CheckpointStore(tmp_path).all_steps() == [1, 2]


def test_all_unreadable_raises_one_line(tmp_path):
    save_steps(tmp_path, [1, 2])
    truncate(tmp_path / "1")
    (tmp_path / "2" / "state" / "manifest.ocdbt").unlink()
    store = CheckpointStore(tmp_path)
    with pytest.raises(CheckpointError) as info:
        store.restore(abstract(make_mesh(8)))
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message and "tried steps [2, 1]" in message
    store.close()


def test_dtype_or_shape_mismatch_is_unreadable(tmp_path):
    """Orbax would silently cast to the requested dtype: a bf16 request for an f32 checkpoint is an error."""
    save_steps(tmp_path, [1])
    store = CheckpointStore(tmp_path)
    for shape, dtype in [((8, 64), jnp.bfloat16), ((4, 64), jnp.float32)]:
        request = abstract(make_mesh(8))
        request["params"]["w"] = jax.ShapeDtypeStruct(shape, dtype, sharding=request["params"]["w"].sharding)
        with pytest.raises(CheckpointError, match=rf"params.w is stored as float32\[8, 64\], expected "
                                                  rf"{jnp.dtype(dtype)}\[{shape[0]}, 64\]"):
            store.restore(request)
    store.close()


def test_resumed_run_saves_over_an_unreadable_step(tmp_path):
    """After falling back from a bad step 2 to step 1, saving step 2 again works; the bad one is kept aside."""
    save_steps(tmp_path, [1, 2])
    delete(tmp_path / "2")
    bad = snapshot(tmp_path / "2")
    mesh = make_mesh(8)
    store = CheckpointStore(tmp_path)
    assert store.restore(abstract(mesh))[2] == {"data_position": 10}
    assert store.save(2, make_state(mesh, 7), config=CONFIG, extra={"data_position": 70})
    store.wait()
    assert store.all_steps() == [1, 2]
    kept = list(tmp_path.glob("2.unreadable-*"))
    assert len(kept) == 1 and snapshot(kept[0]) == bad
    state, _, extra = store.restore(abstract(mesh))
    assert_same(state, make_state(mesh, 7), mesh)
    assert extra == {"data_position": 70}
    store.close()


def test_identity_is_saved_and_a_mismatch_is_not_unreadable(tmp_path):
    """A store bound to a run identity writes it into every checkpoint's extra; a checkpoint of another
    identity raises CheckpointMismatch at once: no fallback to an older step, nothing renamed or modified."""
    from jaxsink.train.checkpoint import CheckpointMismatch
    mesh = make_mesh(8)
    store = CheckpointStore(tmp_path, async_save=False, identity={"tokenizer": {"kind": "a"}})
    for s in (1, 2):
        store.save(s, make_state(mesh, s), config=CONFIG, extra={"data_position": s})
    store.close()
    before = snapshot(tmp_path)
    checked = []

    def check(step, extra):
        checked.append(step)
        if extra.get("tokenizer") != {"kind": "b"}:
            raise CheckpointMismatch(f"step {step} was trained with {extra.get('tokenizer')}")
    store = CheckpointStore(tmp_path, identity={"tokenizer": {"kind": "b"}}, check_identity=check)
    assert store.read_extra(2) == {"data_position": 2, "tokenizer": {"kind": "a"}}
    with pytest.raises(CheckpointMismatch, match=r"^step 2 was trained with \{'kind': 'a'\}$"):
        store.restore(abstract(mesh))
    assert checked == [2]
    store.close()
    assert snapshot(tmp_path) == before and CheckpointStore(tmp_path).all_steps() == [1, 2]


def test_dropped_steps_pass_through_the_trash(tmp_path):
    """keep-N moves dropped steps into DIRECTORY/deleted (an atomic rename) and empties it; what a killed
    process left there is removed when the directory is next opened, and is never a step."""
    save_steps(tmp_path, [1, 2, 3, 4], keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3", "4", "deleted"]
    assert not any((tmp_path / "deleted").iterdir())
    debris = tmp_path / "deleted" / "1" / "state"
    debris.mkdir(parents=True)
    (debris / "half").write_bytes(b"x")
    store = CheckpointStore(tmp_path)
    assert store.all_steps() == [3, 4] and not (tmp_path / "deleted" / "1").exists()
    store.close()


# ------------------------------------------------------------------ workdir lock

def test_workdir_lock_refuses_a_second_holder_and_frees_on_death(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom jaxsink.workdir import workdir_lock\n"
         f"with workdir_lock({str(tmp_path)!r}):\n    print('locked', flush=True)\n    sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirLocked, match=rf"workdir {tmp_path} is in use by pid {holder.pid} on host \S+"):
            with workdir_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with workdir_lock(tmp_path):  # the kernel released the dead holder's lock
        assert f"pid {os.getpid()} " in (tmp_path / ".lock").read_text()


def test_workdir_lock_is_released_on_exit(tmp_path):
    with workdir_lock(tmp_path):
        with pytest.raises(WorkdirLocked):
            with workdir_lock(tmp_path):
                pass
    with workdir_lock(tmp_path):
        pass
