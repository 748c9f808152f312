"""What the kernel sweeps (grid_sweep.py, split_sweep.py) share: compiling their variants in parallel, and running
the backend's calls with one given variant in place of the one the model picks."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

from fusedrnn.backends.cuda import launch, planner
from fusedrnn.backends.cuda.kernels import Variant, compile_variant


def compile_variants(variants: list[Variant], device) -> list:
    """Each variant compiled (through the cubin cache) for ``device``, 16 at a time."""
    from cuda.core import ProgramOptions  # noqa: F401  (import before the threads)

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda v: compile_variant(v, launch.arch_of(device)), variants))


@contextlib.contextmanager
def forced(v: Variant):
    """Within: the backend's calls of ``v``'s kind run ``v`` (loaded afresh on device 0), whatever the model would
    pick (``planner.forced``)."""
    launch._LOADED.pop((0, v.name), None)
    with planner.forced(**{v.kind: v}):
        yield
