"""Ctrl-C that never cuts a training step in half.

A KeyboardInterrupt raised between ``optimizer.step()`` and the step counter's
increment would leave weights one step ahead of the counters, and a checkpoint
written from that state would replay the batch on resume. While a step runs,
:class:`StepInterrupts` therefore holds the first SIGINT back and raises it as a
KeyboardInterrupt once the step is complete; a second Ctrl-C during the same step
raises at once (the user insists) and marks the state as torn, so that nothing
gets saved from it. Outside a step, Ctrl-C behaves as usual.

Only the main thread can own a signal handler, and a handler somebody else
installed (a notebook's, a launcher's) is left alone: then interrupts arrive
unchanged, as they would without jemfast.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

__all__ = ["StepInterrupts"]

logger = logging.getLogger(__name__)


class StepInterrupts:
    """Defers SIGINT to step boundaries while :meth:`listening`.

    Attributes:
        torn: True once a second Ctrl-C interrupted a step midway; the trainer's state
            may then be inconsistent and must not be checkpointed.
    """

    def __init__(self) -> None:
        self._in_step = False
        self._pending = False
        self._installed = False
        self.torn = False

    @contextlib.contextmanager
    def listening(self) -> Iterator[None]:
        """Own SIGINT for the duration of the block (no-op where that is impossible or
        already the case)."""
        if self._installed or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous is not signal.default_int_handler:
            yield
            return
        signal.signal(signal.SIGINT, self._on_sigint)
        self._installed = True
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
            self._installed = False

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Run one training step; a Ctrl-C received meanwhile is raised after it."""
        with self.listening():
            self._in_step = True
            self.torn = False
            try:
                yield
            finally:
                self._in_step = False
            if self._pending:
                self._pending = False
                raise KeyboardInterrupt

    def _on_sigint(self, signum, frame) -> None:
        if self._in_step and not self._pending:
            self._pending = True
            logger.warning(
                "interrupt received: finishing the current step first (Ctrl-C again to stop at once, "
                "without a checkpoint)"
            )
            return
        if self._in_step:
            self.torn = True
            self._pending = False
        raise KeyboardInterrupt
