"""A progress bar for long loops: tqdm when it is installed, else a minimal one of our own on stderr.

tqdm is optional (no new dependency). On a terminal the bar redraws in place; in a log file (stderr not a
terminal) it writes one line at most every ``LOG_INTERVAL_S`` seconds, so that long sweeps do not fill
logs with redraws.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress", "progress"]

LOG_INTERVAL_S = 15.0  # seconds between progress lines when stderr is not a terminal
BAR_WIDTH = 24


class Progress:
    """The fallback bar: ``update``, ``set_postfix_str``, ``write`` (a line above the bar) and ``close``,
    the subset of tqdm's interface that fusedrnn uses."""

    def __init__(self, total: int, desc: str = "", file=None, disable: bool = False):
        self.total, self.desc, self.n = total, desc, 0
        self.file = file if file is not None else sys.stderr
        self.disable = disable
        self.postfix = ""
        self.tty = bool(getattr(self.file, "isatty", lambda: False)())
        self.start = self.last_draw = time.perf_counter()
        self._draw(force=True)

    def _line(self) -> str:
        fraction = self.n / self.total if self.total else 1.0
        filled = int(BAR_WIDTH * fraction)
        elapsed = time.perf_counter() - self.start
        eta = f", ~{elapsed / self.n * (self.total - self.n):.0f} s left" if 0 < self.n < self.total else ""
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        postfix = f" {self.postfix}" if self.postfix else ""
        return f"{self.desc}: [{bar}] {self.n}/{self.total} ({elapsed:.0f} s{eta}){postfix}"

    def _draw(self, force: bool = False) -> None:
        if self.disable:
            return
        now = time.perf_counter()
        if self.tty:
            if force or now - self.last_draw >= 0.1:
                self.file.write("\r\033[K" + self._line())
                self.file.flush()
                self.last_draw = now
        elif force or now - self.last_draw >= LOG_INTERVAL_S:
            self.file.write(self._line() + "\n")
            self.file.flush()
            self.last_draw = now

    def update(self, n: int = 1) -> None:
        self.n += n
        self._draw(force=self.n >= self.total)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text
        self._draw()

    def write(self, line: str) -> None:
        """Print ``line`` to stdout without breaking the bar."""
        if self.tty and not self.disable:
            self.file.write("\r\033[K")
        print(line, flush=True)
        self._draw(force=self.tty)

    def close(self) -> None:
        if self.tty and not self.disable:
            self.file.write("\n")
            self.file.flush()


def progress(total: int, desc: str, disable: bool = False):
    """A tqdm bar on stderr if tqdm is importable, else ``Progress``; both have ``update``,
    ``set_postfix_str``, ``write`` and ``close``."""
    try:
        from tqdm import tqdm
    except ImportError:
        return Progress(total, desc, disable=disable)
    tty = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        file=sys.stderr,
        disable=disable,
        dynamic_ncols=True,
        mininterval=0.1 if tty else LOG_INTERVAL_S,
    )
