"""Command line of fusedrnn: ``python -m fusedrnn {demo,bench,info} [options]``.

One module per command (``demo``, ``bench``, ``info``), each with ``main(argv) -> exit code``; they are
imported only when their command runs, so ``python -m fusedrnn`` alone answers without loading torch.
"""

from __future__ import annotations

import importlib

__all__ = ["COMMANDS", "main", "usage"]

COMMANDS = {
    "demo": "train a small multi-head RNN on a state-tracking task (running parity) and test it on longer inputs",
    "bench": "time fusedrnn's backends against cuDNN, the PyTorch loop and flashrnn; table, JSON, CSV, plot",
    "info": "device, versions, available backends and the launch configuration chosen for a shape",
}


def usage() -> str:
    lines = ["usage: python -m fusedrnn {" + ",".join(COMMANDS) + "} [options]", "", "commands:"]
    lines += [f"  {name:6s} {text}" for name, text in COMMANDS.items()]
    lines += ["", "python -m fusedrnn COMMAND --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run the command named by ``argv[0]`` with the remaining arguments; exit code 2 for an unknown one."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"python -m fusedrnn: unknown command {argv[0]!r}\n\n{usage()}")
        return 2
    module = importlib.import_module(f".{argv[0]}", __name__)
    return module.main(argv[1:])
