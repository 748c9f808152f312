"""Command line: ``python -m fusedrnn demo``."""

import sys

COMMANDS = {"demo": "train a small RNN on a state-tracking task (the main job)"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m fusedrnn {" + ",".join(COMMANDS) + "} [options]")
        for name, text in COMMANDS.items():
            print(f"  {name:8s} {text}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    from . import demo

    return demo.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
