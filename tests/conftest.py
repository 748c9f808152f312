import os
import zlib

import pytest
import torch

# Without a GPU, Triton kernels run in Triton's interpreter on CPU tensors. It must be chosen before
# triton.jit decorates the kernels, that is before fusedrnn is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (run on the device machine: pytest -m gpu)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed(request):
    """Fresh random data per test, reproducible per test id (set FUSEDRNN_TEST_SEED to vary all)."""
    base = int(os.environ.get("FUSEDRNN_TEST_SEED", "0"))
    torch.manual_seed(base + zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(autouse=True)
def _poison_outputs(monkeypatch):
    """Every buffer a fused backend allocates for its outputs starts as NaN, so a kernel that leaves an element
    unwritten fails its test instead of passing on whatever the allocator returned (zeros, often)."""
    from fusedrnn.backends import fused

    monkeypatch.setattr(fused, "POISON_OUTPUTS", True)


@pytest.fixture(autouse=True)
def _restore_tf32():
    """A test that turns TF32 on must not leave it on for the float32 tests after it in the same process."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
