"""The CLI with a kill point, for the crash tests: `python -m tests.crashing ARGS`.

RECONCILE_TEST_KILL_AT="N:before-write[=SIGNAL]" (journaled, not written) or
"N:after-write[=SIGNAL]" (written, not committed) signals this process at that
point of batch N; SIGKILL unless a signal is named; "=SIGINT+SIGINT" sends two,
one right after the other (a person pressing Ctrl-C twice). A kill at an exact point of
the apply loop cannot be produced from outside without timing luck, so this is
fault injection: it replaces `Hooks.checkpoint`, which the product leaves empty,
in this process only. The product never reads the variable.
"""

from __future__ import annotations

import os
import signal

from reconcile.apply import Hooks
from reconcile.cli import main

VARIABLE = "RECONCILE_TEST_KILL_AT"


def install(spec: str) -> None:
    where, _, name = spec.partition("=")

    def checkpoint(self: Hooks, batch: int, phase: str) -> None:
        if where == f"{batch}:{phase}":
            for one in (name or "SIGKILL").split("+"):
                os.kill(os.getpid(), signal.Signals[one])

    Hooks.checkpoint = checkpoint  # type: ignore[method-assign]


if __name__ == "__main__":
    install(os.environ.get(VARIABLE, ""))
    main()
