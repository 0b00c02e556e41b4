"""Live progress for build steps and push layers, fed by the engine's text stream.

The engine writes build output and one line per push-layer status to a ``TextIO``;
:class:`RichProgress` is such a stream that turns those lines into a rich display
(current build step, one bar per layer being pushed). Anything that is not a
terminal gets the plain lines instead.
"""

from __future__ import annotations

import io
import re
import sys
from typing import Optional, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

_STEP = re.compile(r"^(Step \d+/\d+ : .*|#\d+ \[[^\]]+\] .*)$")
_LAYER = re.compile(r"^([0-9a-f]{12}): (Preparing|Waiting|Pushing|Pushed|Layer already exists|Mounted from .*|Retrying.*)(?: .*?(\d+(?:\.\d+)?)([kMG]?B)/(\d+(?:\.\d+)?)([kMG]?B))?")
_UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}


class RichProgress(io.TextIOBase):
    """A writable text stream that shows build steps and push layers as rich progress."""

    def __init__(self, console: Optional[Console] = None, *, echo: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.echo = echo
        self._buffer = ""
        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(), console=self.console, transient=False,
        )
        self._step_task = self._progress.add_task("build", total=None)
        self._layers: dict[str, int] = {}

    def __enter__(self) -> "RichProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:  # type: ignore[override]
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self._line(line.rstrip())
        return len(text)

    def _line(self, line: str) -> None:
        if not line:
            return
        if self.echo:
            self._progress.console.print(line, markup=False, highlight=False)
        if _STEP.match(line):
            self._progress.update(self._step_task, description=line[:100])
            return
        m = _LAYER.match(line)
        if not m:
            return
        layer, status = m.group(1), m.group(2)
        task = self._layers.get(layer)
        if task is None:
            task = self._layers[layer] = self._progress.add_task(f"layer {layer}", total=None)
        if m.group(3):
            done = float(m.group(3)) * _UNITS.get(m.group(4), 1)
            total = float(m.group(5)) * _UNITS.get(m.group(6), 1)
            self._progress.update(task, completed=done, total=total, description=f"layer {layer} {status}")
        elif status in ("Pushed", "Layer already exists") or status.startswith("Mounted"):
            self._progress.update(task, completed=1, total=1, description=f"layer {layer} {status}")
        else:
            self._progress.update(task, description=f"layer {layer} {status}")


def progress_stream(enabled: bool = True) -> tuple[Optional[TextIO], Optional[RichProgress]]:
    """(stream for the engine, context manager to enter) for the current terminal.

    A terminal gets a :class:`RichProgress`; a pipe or file gets the plain lines on stderr.
    """
    if not enabled:
        return None, None
    if sys.stderr.isatty():
        rp = RichProgress()
        return rp, rp  # type: ignore[return-value]
    return sys.stderr, None
