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
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys



def tpu_commands(a, job: list[str]) -> list[list[str]]:
    run = a.name
    ckpt = f"{a.bucket.rstrip('/')}/{run}/checkpoints"
    install = ("python3 -m venv ~/venv && ~/venv/bin/pip install -q -U pip && "
               "~/venv/bin/pip install -q 'jax[tpu]' && ~/venv/bin/pip install -q -e ~/jaxsink")
    job = [*job, f"--config.train.checkpoint_dir={ckpt}"] if job and job[0] == "train" else job
    remote = f"cd ~/jaxsink && ~/venv/bin/jaxsink --distributed {shlex.join(job)}"
    ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", run, f"--zone={a.zone}", "--worker=all", "--command"]
    return [
        ["gcloud", "compute", "tpus", "tpu-vm", "create", run, f"--zone={a.zone}",
         f"--accelerator-type={a.accelerator}", f"--version={a.runtime}", *(["--spot"] if a.spot else [])],
        ["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse", a.source, f"{run}:~/jaxsink",
         f"--zone={a.zone}", "--worker=all"],
        [*ssh, install],
        [*ssh, remote],
        *([["gcloud", "compute", "tpus", "tpu-vm", "delete", run, f"--zone={a.zone}", "--quiet"]]
          if a.delete else []),
    ]


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
    p.add_argument("--spot", action="store_true")
    p.add_argument("--delete", action="store_true", help="delete the TPU VM when the job ends")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--time", default="48:00:00")
    args, job = p.parse_known_args(argv)
    job = job[1:] if job[:1] == ["--"] else job
    if not job:
        p.error("give the jaxsink command after --, e.g. -- train --config paper_7b --workdir /tmp/run")
    commands = {"tpu": tpu_commands, "slurm": slurm_commands, "gpu": gpu_commands}[args.target](args, job)
    for cmd in commands:
        print(shlex.join(cmd), flush=True)
        if not args.dry_run:
            subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
