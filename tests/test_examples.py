"""The examples run at small sizes on the CPU: the integration ones (examples/xlstm_slstm_stack.py,
examples/tirex_forecast.py) agree with the libraries' own paths, the rollout one (examples/rl_rollout_resets.py) with
each episode run alone."""

import importlib.util
import math
from pathlib import Path

import pytest

from .helpers import import_test_package

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_xlstm_slstm_stack_example(capsys):
    import_test_package("xlstm", "xlstm")
    argv = "--device cpu --blocks 2 --embedding 32 --heads 4 --batch 4 --length 16 --steps 3".split()
    summary = _load("xlstm_slstm_stack").main(argv)
    # float32 on both sides: the parity bar of tests/test_compat_xlstm.py
    assert summary["max_difference_to_xlstm"] <= 1e-5
    assert math.isfinite(summary["first_loss"]) and math.isfinite(summary["last_loss"])
    assert "running parity" in capsys.readouterr().out


def test_tirex_forecast_example(capsys):
    import_test_package("tirex", "tirex-ts")
    argv = "--small --device cpu --series 3 --context 64 --prediction-length 20 --repeats 1".split()
    summary = _load("tirex_forecast").main(argv)
    assert summary["quantiles_shape"] == [3, 20, 9]
    # bfloat16 recurrence on both sides (the bound of tests/test_compat_tirex.py)
    assert summary["max_difference_relative"] <= 1e-2
    assert "largest difference" in capsys.readouterr().out


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["xlstm_slstm_stack", "tirex_forecast"])
def test_examples_on_the_gpu(name):
    import_test_package(
        "xlstm" if name.startswith("xlstm") else "tirex", "xlstm" if name.startswith("xlstm") else "tirex-ts"
    )
    argv = ["--device", "cuda"] + (["--steps", "5"] if name.startswith("xlstm") else ["--repeats", "1"])
    summary = _load(name).main(argv)
    assert summary["device"] == "cuda"


def test_a_missing_package_fails_where_the_test_extra_is_installed(monkeypatch):
    """import_test_package skips where fusedrnn's [test] extra is not installed and fails where it is (CI)."""
    import importlib.metadata as metadata

    from . import helpers

    requires = ['pytest>=7; extra == "test"', 'xlstm==2.0.6; extra == "test"', "torch>=2.4"]
    installed = {"pytest"}

    def distribution(name):
        if name not in installed:
            raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "requires", lambda name: requires)
    monkeypatch.setattr(metadata, "distribution", distribution)
    assert helpers._test_extra_installed("xlstm")  # every other package of the extra is there
    with pytest.raises(pytest.fail.Exception, match="in fusedrnn's \\[test\\] extra"):
        helpers.import_test_package("a_module_that_does_not_exist", "xlstm")
    installed.clear()  # pytest missing too: the extra is not installed
    with pytest.raises(pytest.skip.Exception, match="xlstm is not installed"):
        helpers.import_test_package("a_module_that_does_not_exist", "xlstm")


def test_rl_rollout_resets_example(capsys):
    argv = "--device cpu --batch 4 --length 32 --hidden 32 --heads 4 --steps 40".split()
    summary = _load("rl_rollout_resets").main(argv)
    # float32 on the CPU: one call with resets against each episode run alone differ by summation order only
    assert summary["max_difference_to_episodes_alone"] <= 1e-5
    # the running count since the episode start is learnable only with the resets: the loss must fall
    assert summary["last_loss"] < 0.5 * summary["first_loss"]
    assert "each episode alone" in capsys.readouterr().out
