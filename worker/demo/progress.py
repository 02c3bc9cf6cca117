"""Progress on one updating line of a terminal, and nothing at all anywhere else (a pipe, a
file, CI): a log is no place for a spinner, and a person reads one line, not fifteen."""
from __future__ import annotations

from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = bool(getattr(stream, "isatty", lambda: False)())
        self._shown = False

    def update(self, text: str) -> None:
        """Replace the line (carriage return, then clear to its end)."""
        if self.live:
            self.stream.write(f"\r{text}\x1b[K")
            self.stream.flush()
            self._shown = True

    def done(self) -> None:
        """Clear the line, so what follows starts at the left margin."""
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False
