"""Command line of fusedrnn: ``python -m fusedrnn {demo,bench,info} [options]``, or ``fusedrnn ...`` (the console
command the package installs).

One module per command (``demo``, ``bench``, ``info``), each with ``main(argv) -> exit code``; they are
imported only when their command runs, so ``python -m fusedrnn`` alone answers without loading torch.
"""

from __future__ import annotations

import importlib
import sys

from .args import program

__all__ = ["COMMANDS", "main", "usage"]

COMMANDS = {
    "demo": "train a small multi-head RNN on a state-tracking task (running parity) and test it on longer inputs",
    "bench": "time fusedrnn's backends against cuDNN, the PyTorch loop and flashrnn; table, JSON, CSV, plot",
    "info": "device, versions, available backends and the launch configuration chosen for a shape",
}


def usage() -> str:
    prog = program()
    lines = [f"usage: {prog} {{" + ",".join(COMMANDS) + "} [options]", "", "commands:"]
    lines += [f"  {name:6s} {text}" for name, text in COMMANDS.items()]
    lines += ["", f"{prog} COMMAND --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the command named by ``argv[0]`` (default: ``sys.argv[1:]``) with the remaining arguments and return
    its exit code; an unknown command is a usage error: one line on stderr, exit code 2. The ``fusedrnn``
    console command calls this."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(
            f"{program()}: error: unknown command {argv[0]!r}; expected one of {', '.join(COMMANDS)} "
            f"(see {program()} --help)",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(f".{argv[0]}", __name__)
    return int(module.main(argv[1:]))
