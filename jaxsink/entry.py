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
import sys

from jaxsink import notice


def main(argv=None) -> int:
    notice.install()

    def command() -> int:
        from jaxsink.cli import main as cli_main
        return cli_main(argv)
    return notice.then_ignore(command)


if __name__ == "__main__":
    sys.exit(main())
