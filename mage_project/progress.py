"""What a pipeline run shows as it goes: a line per block as it ends (name, outcome, seconds,
rows), on the terminal the run started with, whatever file descriptors 1 and 2 are redirected to
afterwards (``runner.output_to``); on a terminal, rich's live display of the same lines and of the
block running. Then the run's last line: ``succeeded`` or ``error_line``. For example::

      fetch_activity_user_activity     ok         0.4s  3,009 rows
      validate_activity_user_activity  ok         1.1s  3,009 rows
      load_postgres_user_activity      ok         0.1s  3,009 rows
    user_activity_ingest run 20261204T191009Z-81fcd1d6 succeeded in 6.3 s (log: .data/logs/...)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TextIO

from mage_project.runner import BlockEvent

NAME_WIDTH = 32  # the longest block name of the project's pipelines is 31 characters
STYLES = {"ok": "green", "failed": "bold red", "skipped": "yellow"}
MARKS = {"ok": "✓", "failed": "✗", "skipped": "-"}


def block_line(event: BlockEvent) -> str:
    """A block's end as one line: its name, outcome, seconds (not for a skipped block, which
    never ran) and the rows its output counts, when it counts rows."""
    seconds = "" if event.status == "skipped" else f"{event.seconds:.1f}s"
    line = f"  {event.block:<{NAME_WIDTH}} {event.status:<7} {seconds:>7}"
    if event.rows is not None:
        line += f"  {event.rows:,} {'row' if event.rows == 1 else 'rows'}"
    return line.rstrip()


def succeeded(pipeline: str, run_id: str, seconds: float, log: Path | None) -> str:
    """The last line of a run that succeeded, naming its log file (None: there is none)."""
    return f"{pipeline} run {run_id} succeeded in {seconds:.1f} s" + (f" (log: {log})" if log else "")


def error_line(what: str, todo: str, log: Path | None) -> str:
    """The last line of a run that failed: what failed, what to do, where the whole output is
    (None: on the terminal, above)."""
    where = f"the traceback and Mage's output: {log}" if log else "the whole output is above"
    return f"error: {what}; {todo} ({where})"


class Progress:
    """Shows the blocks of a run: a context manager, and the run's observer
    (``runner.run_pipeline(..., observer=progress)``).

    Writes to a duplicate of ``stream``'s file descriptor made when it is created, so that what
    is redirected afterwards does not reach it; plain lines unless ``stream`` is a terminal and
    ``live`` is true, then rich's live display (``transient``: gone when the run ends).
    """

    def __init__(self, stream: TextIO | None = None, live: bool = True, transient: bool = False):
        self._stream, self._owned = _duplicate(stream or sys.stderr)
        self.live = live and self._stream.isatty()
        self._transient = transient
        self._display = None
        self._running: tuple[str, float] | None = None
        self._started = 0.0
        self._spinner = None
        self.ended: list[BlockEvent] = []

    @property
    def failed(self) -> BlockEvent | None:
        """The block that failed, if one did."""
        return next((event for event in self.ended if event.status == "failed"), None)

    def __enter__(self) -> Progress:
        self._started = time.monotonic()
        if self.live:
            from rich.console import Console
            from rich.live import Live
            from rich.spinner import Spinner

            self._spinner = Spinner("dots", style="cyan")

            # Not rich's redirection of sys.stdout and sys.stderr: what Mage prints goes where
            # the run sends it (its log file), not onto the display.
            self._display = Live(self, console=Console(file=self._stream), refresh_per_second=8,
                                 transient=self._transient, redirect_stdout=False,
                                 redirect_stderr=False)
            self._display.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._running = None
        if self._display is not None:
            self._display.stop()
            self._display = None
        self._stream.flush()
        if self._owned:
            self._stream.close()

    def __call__(self, event: BlockEvent) -> None:
        if event.status == "started":
            self._running = (event.block, time.monotonic())
            return
        self._running = None
        self.ended.append(event)
        if self._display is not None:
            self._display.refresh()
        else:
            print(block_line(event), file=self._stream, flush=True)

    def __rich__(self):
        """The live display: each block ended, then the one running, with its seconds so far."""
        from rich.console import Group
        from rich.text import Text

        lines = [Text(f"{MARKS[e.status]} {block_line(e)[2:]}", style=STYLES[e.status])
                 for e in self.ended]
        doing = self._doing()
        if doing is not None:
            self._spinner.update(text=doing)
            lines.append(self._spinner)
        return Group(*lines)

    def _doing(self) -> str | None:
        """What the run is doing, with its seconds so far: the block running or, before the
        first, starting (importing Mage and reading the pipeline take some seconds)."""
        if self._running is not None:
            block, since = self._running
            return f"{block:<{NAME_WIDTH}} running {time.monotonic() - since:>6.1f}s"
        if not self.ended:
            return f"{'starting':<{NAME_WIDTH}} {'':<7} {time.monotonic() - self._started:>6.1f}s"
        return None


def _duplicate(stream: TextIO) -> tuple[TextIO, bool]:
    """A stream on a duplicate of ``stream``'s file descriptor (and True: close it when done),
    or ``stream`` itself when it has none (a test's captured output)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return stream, False
    stream.flush()
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding=encoding, errors="replace"), True
