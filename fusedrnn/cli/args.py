"""What every command line of fusedrnn shares: a parser whose errors are one line on stderr with exit code 2,
and argument types that reject bad values while parsing (``--steps 0``, ``--device cuda`` without a GPU).

torch is imported only inside ``device``, so that the torch-free ``python -m fusedrnn.tune`` can use the parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import torch

__all__ = ["Parser", "at_least", "device", "non_negative", "positive", "positive_float", "program"]


def program(command: str = "") -> str:
    """How the user started us, for messages: ``fusedrnn demo`` from the console command, else
    ``python -m fusedrnn demo``."""
    base = "fusedrnn" if os.path.basename(sys.argv[0]) == "fusedrnn" else "python -m fusedrnn"
    return f"{base} {command}".strip()


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (``PROG: error: MESSAGE``) and exit code 2: the full
    usage of a command with twenty options would bury the message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


positive = at_least(1)


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value:g}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value:g}")
    return value


def device(text: str) -> torch.device:
    """An argparse type: ``cpu``, ``cuda`` or ``cuda:N`` naming a device this machine has, as a torch.device."""
    import torch

    try:
        found = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}") from None
    if found.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    if found.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r} asked for, but no CUDA device is available (use cpu)")
        count = torch.cuda.device_count()
        if found.index is not None and found.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r} asked for, but this machine has {count} CUDA device(s)")
    return found
