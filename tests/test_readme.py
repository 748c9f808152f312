"""The README's set-up commands are the ones CI runs, and the main job runs."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line and not line.startswith("#")]


def test_ci_runs_the_readme_test_command():
    test_command = _readme_commands()[1]
    assert "pytest" in test_command
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_demo_runs_and_learns():
    out = subprocess.run(
        [sys.executable, "-m", "fusedrnn", "demo", "--steps", "150", "--eval-length", "64"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=True,
    ).stdout
    losses = [float(v) for v in re.findall(r"loss (\d+\.\d+)", out)]
    assert losses[-1] < 0.5 * losses[0], out
    accuracy = float(re.search(r"accuracy on length-64 sequences .*: (\d\.\d+)", out).group(1))
    assert accuracy > 0.9, out
