"""tpu/launch.py on a spot slice, driven by a fake `gcloud` on PATH: the workers get the tested jax (pinned,
with its libtpu); a preempted slice is re-created and the same job re-run; retries are bounded."""
import importlib.metadata
import os
import pathlib
import subprocess
import sys


LAUNCH = pathlib.Path(__file__).resolve().parents[1] / "tpu" / "launch.py"

# the fake gcloud: logs each call; `ssh ... --command 'cd ~/jaxsink ...'` (the job) preempts the slice while
# PREEMPT_TIMES > 0 (exit 255, state PREEMPTED, counter decremented); `create` makes the slice READY
FAKE = r"""#!/bin/bash
state_dir="$FAKE_GCLOUD_DIR"
echo "$*" >> "$state_dir/calls"
case "$*" in
  *" create "*) echo READY > "$state_dir/state" ;;
  *" delete "*) rm -f "$state_dir/state" ;;
  *" describe "*) [ -f "$state_dir/state" ] || exit 1; cat "$state_dir/state" ;;
  *"cd ~/jaxsink"*)
    n=$(cat "$state_dir/preempt" 2>/dev/null || echo 0)
    if [ "$n" -gt 0 ]; then echo $((n - 1)) > "$state_dir/preempt"; echo PREEMPTED > "$state_dir/state"; exit 255; fi
    exit 0 ;;
esac
exit 0
"""


def launch(tmp_path, preempt_times: int, *extra):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "gcloud").write_text(FAKE)
    (bin_dir / "gcloud").chmod(0o755)
    (tmp_path / "preempt").write_text(str(preempt_times))
    (tmp_path / "calls").unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_GCLOUD_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, str(LAUNCH), "tpu", "--spot", "--backoff", "0", "--name", "js", *extra,
                        "--", "train", "--config", "tiny", "--workdir", "/tmp/run"],
                       env=env, capture_output=True, text=True, timeout=60)
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return r, [c.split()[3] for c in calls], calls


def test_preempted_slice_is_recreated_and_the_job_rerun(tmp_path):
    r, verbs, calls = launch(tmp_path, preempt_times=2)
    assert r.returncode == 0, r.stderr
    setup = ["create", "scp", "ssh"]
    rerun = ["describe", "delete", *setup, "ssh"]
    assert verbs == [*setup, "ssh", *rerun, *rerun, "describe"], verbs
    jobs = [c for c in calls if "cd ~/jaxsink" in c]
    assert len(jobs) == 3 and len(set(jobs)) == 1, "the same command each time"
    assert "--config.train.checkpoint_dir=gs://" in jobs[0], "checkpoints on shared storage, so it resumes"
    assert all("--spot" in c for c in calls if " create " in c)
    assert r.stderr.count("re-creating it") == 2


def test_retries_are_bounded(tmp_path):
    r, verbs, _ = launch(tmp_path, 99, "--max-restarts", "2")
    assert r.returncode == 1 and verbs.count("create") == 3
    assert "giving up" in r.stderr.splitlines()[-1]


def test_a_failing_job_on_a_healthy_slice_is_not_retried(tmp_path):
    bin_dir = tmp_path / "bin"
    r, verbs, _ = launch(tmp_path, 0)
    assert r.returncode == 0 and verbs.count("create") == 1
    (bin_dir / "gcloud").write_text(FAKE.replace("    exit 0 ;;\nesac", "    exit 3 ;;\nesac"))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_GCLOUD_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, str(LAUNCH), "tpu", "--spot", "--backoff", "0", "--", "train"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and r.stderr.count("re-creating") == 0


def test_workers_install_the_tested_jax_and_its_libtpu(tmp_path):
    r, _, calls = launch(tmp_path, 0)
    install = next(c for c in calls if "pip install" in c)
    jax_version = importlib.metadata.version("jax")
    assert f'"jax[tpu]=={jax_version}"' in install and f'"jaxlib=={jax_version}"' in install
    libtpu = next(q.split("==")[1].split(";")[0].strip() for q in importlib.metadata.requires("jax")
                  if q.startswith("libtpu") and "tpu" in q.split(";")[1])
    assert f'"libtpu=={libtpu}"' in install
    for name in ("flax", "optax", "orbax-checkpoint"):
        assert f'"{name}=={importlib.metadata.version(name)}"' in install
    assert f"= {jax_version}" in install, "the installed version is checked"


def test_dry_run_shows_the_loop(tmp_path):
    r = subprocess.run([sys.executable, str(LAUNCH), "tpu", "--spot", "--dry-run", "--max-restarts", "3",
                        "--backoff", "10", "--", "train", "--config", "tiny", "--workdir", "/tmp/run"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "if not READY: delete, create, scp, install and the same job again, up to 3 times, waiting 10, 20, 40 s" \
        in r.stdout
    assert "describe" in r.stdout.splitlines()[-1]
