"""Progress on stderr, as a terminal user expects it."""

from __future__ import annotations

import shutil
import sys


class StatusLine:
    """Progress on stderr: on a terminal one status line rewritten in place, which a lasting
    line (``say``) replaces; elsewhere (a log file, CI) every line as it comes."""

    def __init__(self) -> None:
        self.active = False

    def _tty(self) -> bool:
        try:
            return sys.stderr.isatty()
        except (AttributeError, ValueError):
            return False

    def say(self, line: str) -> None:
        if self.active:
            sys.stderr.write("\r\033[K")
            self.active = False
        print(line, file=sys.stderr, flush=True)

    def finish(self) -> None:
        """Clear a status line left on the terminal."""
        if self.active:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.active = False

    def status(self, line: str) -> None:
        if not self._tty():
            print(line, file=sys.stderr, flush=True)
            return
        width = shutil.get_terminal_size((100, 20)).columns
        sys.stderr.write("\r\033[K" + line[: max(width - 1, 20)])
        sys.stderr.flush()
        self.active = True
