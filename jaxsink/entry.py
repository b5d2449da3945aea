"""The `jaxsink` command (console script, and `python -m jaxsink.entry`): SIGTERM is a preemption notice from
the process's first lines to its exit.

`jaxsink.cli` imports JAX, Flax and Orbax (seconds of start-up) before its `main` can run, so a console
script doing `from jaxsink.cli import main` left a window where a SIGTERM killed the process by the default
action (status -15; seen in CI 11 s after a launch under load). Here the handler (`jaxsink.notice`,
standard library only) is installed before anything heavy is imported; `jaxsink.cli.main` then reads the
notice (before training started: exit 0 with one line, no checkpoint written; during training: a checkpoint
at the next step boundary, exit 0). After `cli.main` returns, SIGTERM is ignored for the rest of the process
(Orbax/JAX atexit handlers, background threads, interpreter teardown): the work is saved or the status is
decided, and `SIG_IGN`, unlike a Python handler, survives the interpreter's finalisation. What is left is
the interpreter's own start-up before this module runs (measured in RELIABILITY.md).
"""
import glob
import importlib.util
import os
import sys

from jaxsink import cpu_setup, notice

GOOGLE_PCI_VENDOR = "0x1ae0"    # TPU chips on a Cloud TPU VM


def default_to_cpu_without_tpu() -> None:
    """With the `[tpu]` extra (libtpu, for `jaxsink compile`) on a machine without TPU chips, JAX would try
    to start libtpu and print several lines of initialisation errors before falling back to the CPU: make
    the CPU the platform there unless JAX_PLATFORMS says otherwise or another accelerator is present."""
    if os.environ.get("JAX_PLATFORMS", "").strip() or importlib.util.find_spec("libtpu") is None:
        return
    if not accelerator_present():
        os.environ["JAX_PLATFORMS"] = "cpu"


def runs_on_cpu() -> bool:
    """JAX will compute on the CPU: JAX_PLATFORMS names only the CPU, or it is unset or empty (JAX then picks
    the platform itself) and no accelerator is present (a libtpu wheel alone is not one)."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms == "cpu"
    return not accelerator_present()


def accelerator_present() -> bool:
    """A TPU (its PCI vendor id or /dev/accel*) or an NVIDIA device is on this machine."""
    vendors = set()
    for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(path) as f:
                vendors.add(f.read().strip())
        except OSError:
            continue
    return GOOGLE_PCI_VENDOR in vendors or bool(glob.glob("/dev/accel*")) or bool(glob.glob("/dev/nvidia[0-9]*"))


def main(argv=None) -> int:
    notice.install()
    default_to_cpu_without_tpu()
    if runs_on_cpu():
        cpu_setup.prepare()

    def command() -> int:
        from jaxsink.cli import main as cli_main
        return cli_main(argv)
    return notice.then_ignore(command)


if __name__ == "__main__":
    sys.exit(main())
