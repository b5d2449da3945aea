"""Launch any jaxsink command (a training run or a sweep variant) on a Cloud TPU pod slice, a multi-GPU host,
or a SLURM cluster. `--dry-run` prints the exact commands instead of running them.

    python tpu/launch.py tpu   --name js-v5p-64 --zone us-east5-a --accelerator v5p-64 --bucket gs://my-bucket \
        -- train --config paper_7b --workdir /tmp/run --config.mesh.fsdp=32 --config.mesh.tensor=1
    python tpu/launch.py slurm --nodes 4 --gpus-per-node 8 -- train --config small --workdir runs/small
    python tpu/launch.py gpu   -- train --config small --workdir runs/small        # one host, all its GPUs

Every host runs the same `jaxsink --distributed ...` command: `jax.distributed.initialize()` discovers the
other hosts (TPU metadata or SLURM variables); process 0 writes config.json and metrics.jsonl to its
workdir, and every host writes its checkpoint shards to `train.checkpoint_dir`, which must be shared
storage on a pod (a gs:// bucket path; set automatically from --bucket).

Every TPU worker gets the jax this project was tested with: `jax[tpu]`, `jaxlib` and the `libtpu` that jax
release pins, read from the versions installed here (or `--jax-version`), plus the installed flax, optax and
orbax-checkpoint, so a pod never runs a jax that the pinned Flax and Orbax never met.

`--spot`: the slice is a spot (preemptible) one. After the job's command ends, the launcher asks gcloud for
the slice's state; if it is not READY (PREEMPTED, TERMINATED, deleted) the slice is deleted, re-created, set
up again and the same command re-run, so training resumes from the last checkpoint in the bucket (a
SIGTERM'd run saves one at its next step boundary). At most --max-restarts re-creations, waiting --backoff
seconds before the first and twice as long before each next one (at most 15 minutes). A job that fails on a
READY slice is an error of the job, not a preemption: no retry.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import re
import shlex
import subprocess
import sys
import time

PINNED = ("flax", "optax", "orbax-checkpoint")   # installed next to jax at the versions tested here


def tested_versions(jax_version: str | None = None) -> dict[str, str]:
    """{package: version} of jax, jaxlib, the libtpu that jax release pins, and PINNED, as installed here."""
    meta = importlib.metadata
    try:
        installed = meta.version("jax")
    except meta.PackageNotFoundError:
        if not jax_version:
            raise SystemExit("launch: jax is not installed here; give the tested version with --jax-version") from None
        installed = None
    jax_version = jax_version or installed
    requires = (meta.requires("jax") or []) if jax_version == installed else []   # else jax[tpu] picks libtpu
    libtpu = next((m.group(1) for r in requires if (m := re.match(r"libtpu\s*==\s*([^;\s]+)\s*;.*tpu", r))), None)
    versions = {"jax": jax_version, "jaxlib": jax_version, **({"libtpu": libtpu} if libtpu else {})}
    for name in PINNED:
        try:
            versions[name] = meta.version(name)
        except meta.PackageNotFoundError:
            pass
    return versions


def install_command(versions: dict[str, str]) -> str:
    """A venv with jaxsink and exactly `versions` (libtpu from Google's release index), checked after."""
    pins = [f'"jax[tpu]=={versions["jax"]}"', *(f'"{n}=={v}"' for n, v in versions.items() if n != "jax")]
    return ("python3 -m venv ~/venv && ~/venv/bin/pip install -q -U pip && "
            f"~/venv/bin/pip install -q -e ~/jaxsink {' '.join(pins)} "
            "-f https://storage.googleapis.com/jax-releases/libtpu_releases.html && "
            f'test "$(~/venv/bin/python -c "import jax; print(jax.__version__)")" = {versions["jax"]}')


def _tpu(a, verb: str, *rest: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", verb, *rest, f"--zone={a.zone}"]


def tpu_setup(a) -> list[list[str]]:
    """Create the slice, copy the checkout to every worker, install the tested versions."""
    return [
        [*_tpu(a, "create", a.name), f"--accelerator-type={a.accelerator}", f"--version={a.runtime}",
         *(["--spot"] if a.spot else [])],
        [*_tpu(a, "scp", "--recurse", a.source, f"{a.name}:~/jaxsink"), "--worker=all"],
        [*_tpu(a, "ssh", a.name), "--worker=all", "--command", install_command(tested_versions(a.jax_version))],
    ]


def tpu_job(a, job: list[str]) -> list[str]:
    ckpt = f"{a.bucket.rstrip('/')}/{a.name}/checkpoints"
    job = [*job, f"--config.train.checkpoint_dir={ckpt}"] if job and job[0] == "train" else job
    remote = f"cd ~/jaxsink && ~/venv/bin/jaxsink --distributed {shlex.join(job)}"
    return [*_tpu(a, "ssh", a.name), "--worker=all", "--command", remote]


def tpu_delete(a) -> list[str]:
    return [*_tpu(a, "delete", a.name), "--quiet"]


def tpu_state(a) -> list[str]:
    return [*_tpu(a, "describe", a.name), "--format=value(state)"]


def tpu_commands(a, job: list[str]) -> list[list[str]]:
    return [*tpu_setup(a), tpu_job(a, job), *([tpu_delete(a)] if a.delete else [])]


def _run(cmd: list[str], dry_run: bool, check: bool = True, capture: bool = False):
    print(shlex.join(cmd), flush=True)
    if dry_run:
        return subprocess.CompletedProcess(cmd, 0, "READY\n" if capture else None)
    return subprocess.run(cmd, check=check, text=True, stdout=subprocess.PIPE if capture else None)


def spot_loop(a, job: list[str], sleep=time.sleep) -> int:
    """Set up, run; while the slice was preempted or deleted under the job: re-create it and re-run."""
    if a.dry_run:
        print(f"# --spot: after the job, `{shlex.join(tpu_state(a))}`; if not READY: delete, create, scp, install "
              f"and the same job again, up to {a.max_restarts} times, waiting "
              f"{', '.join(f'{_backoff(a, i):.0f}' for i in range(a.max_restarts))} s", flush=True)
    for cmd in tpu_setup(a):
        _run(cmd, a.dry_run)
    for restart in range(a.max_restarts + 1):
        rc = _run(tpu_job(a, job), a.dry_run, check=False).returncode
        state = _run(tpu_state(a), a.dry_run, check=False, capture=True)
        state = state.stdout.strip() if state.returncode == 0 else "NOT_FOUND"
        if state == "READY":
            if a.delete:
                _run(tpu_delete(a), a.dry_run)
            return rc
        if a.dry_run or restart == a.max_restarts:
            break
        wait = _backoff(a, restart)
        print(f"launch: slice {a.name} is {state} (job exit {rc}): re-creating it in {wait:.0f} s "
              f"(restart {restart + 1} of {a.max_restarts})", file=sys.stderr, flush=True)
        sleep(wait)
        _run(tpu_delete(a), a.dry_run, check=False)
        for cmd in tpu_setup(a):
            _run(cmd, a.dry_run)
    if a.dry_run:
        return 0
    print(f"launch: slice {a.name} was lost {a.max_restarts + 1} times; giving up (the checkpoints in "
          f"{a.bucket} are intact: run the launcher again to resume)", file=sys.stderr)
    return 1


def _backoff(a, restart: int) -> float:
    return min(a.backoff * 2 ** restart, 900.0)


def slurm_commands(a, job: list[str]) -> list[list[str]]:
    script = "\n".join([
        "#!/bin/bash",
        f"#SBATCH --nodes={a.nodes}", "#SBATCH --ntasks-per-node=1", f"#SBATCH --gpus-per-node={a.gpus_per_node}",
        f"#SBATCH --time={a.time}", "#SBATCH --job-name=jaxsink",
        f"srun jaxsink --distributed {shlex.join(job)}", ""])
    return [["bash", "-c", f"sbatch <<'EOF'\n{script}EOF"]]


def gpu_commands(a, job: list[str]) -> list[list[str]]:
    return [["jaxsink", *job]]   # one process drives every local GPU


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("target", choices=("tpu", "slurm", "gpu"))
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--name", default="jaxsink")
    p.add_argument("--zone", default="us-central2-b")
    p.add_argument("--accelerator", default="v4-32")
    p.add_argument("--runtime", default="tpu-ubuntu2204-base")
    p.add_argument("--bucket", default="gs://YOUR-BUCKET/jaxsink")
    p.add_argument("--source", default=".", help="local checkout copied to every TPU worker")
    p.add_argument("--spot", action="store_true", help="a spot slice: re-create it and re-run when preempted")
    p.add_argument("--max-restarts", type=int, default=5, help="--spot: re-creations before giving up")
    p.add_argument("--backoff", type=float, default=60.0, help="--spot: seconds before the first re-creation")
    p.add_argument("--jax-version", help="jax to install on the workers (default: the one installed here)")
    p.add_argument("--delete", action="store_true", help="delete the TPU VM when the job ends")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--time", default="48:00:00")
    args, job = p.parse_known_args(argv)
    job = job[1:] if job[:1] == ["--"] else job
    if not job:
        p.error("give the jaxsink command after --, e.g. -- train --config paper_7b --workdir /tmp/run")
    if args.target == "tpu" and args.spot:
        return spot_loop(args, job)
    commands = {"tpu": tpu_commands, "slurm": slurm_commands, "gpu": gpu_commands}[args.target](args, job)
    for cmd in commands:
        print(shlex.join(cmd), flush=True)
        if not args.dry_run:
            subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
