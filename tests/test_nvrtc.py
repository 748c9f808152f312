"""NVRTC compilation through cuda-core and the on-disk cubin cache (fusedrnn.backends.cuda.nvrtc): runs
without a GPU (NVRTC compiles for any architecture on the CPU)."""

import multiprocessing
import os

import pytest

pytest.importorskip("cuda.core", reason="cuda-core (the [cuda] extra) is not installed")

from fusedrnn.backends.cuda import nvrtc  # noqa: E402

# a kernel whose register use grows with its template argument
SOURCE = r"""
template <int N>
__global__ void __launch_bounds__(256) mix(float* out, const float* in, int n) {
    float acc[N];
    #pragma unroll
    for (int k = 0; k < N; ++k) acc[k] = in[k * n + threadIdx.x];
    float s = 0.f;
    #pragma unroll
    for (int k = 0; k < N; ++k) s += acc[k] * acc[(k * 7 + 3) % N];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = s;
}
"""


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(nvrtc.CACHE_ENV, str(tmp_path))


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_compiles_with_resource_report(arch):
    kernel = nvrtc.compile_kernel(SOURCE, "mix<16>", arch)
    assert kernel.cubin[:4] == b"\x7fELF" and kernel.arch == arch and kernel.name == "mix<16>"
    assert kernel.symbol.startswith("_Z3mixILi16EE")
    assert 16 <= kernel.registers <= 255 and not kernel.spills and not kernel.from_cache
    assert "Used" in kernel.log


def test_spills_are_reported():
    # 1024 threads and 2 blocks per SM leave 32 registers a thread: 64 live floats must spill
    tight = SOURCE.replace("__launch_bounds__(256)", "__launch_bounds__(1024, 2)")
    kernel = nvrtc.compile_kernel(tight, "mix<64>", "sm_90a")
    assert kernel.registers <= 32 and kernel.spills and kernel.spill_stores > 0


def test_cache_hit_and_key():
    first = nvrtc.compile_kernel(SOURCE, "mix<8>", "sm_90a")
    again = nvrtc.compile_kernel(SOURCE, "mix<8>", "sm_90a")
    assert again.from_cache and again.cubin == first.cubin and again.registers == first.registers
    # every part of the key makes a new entry
    assert not nvrtc.compile_kernel(SOURCE, "mix<8>", "sm_80").from_cache
    assert not nvrtc.compile_kernel(SOURCE, "mix<9>", "sm_90a").from_cache
    assert not nvrtc.compile_kernel(SOURCE + "\n", "mix<8>", "sm_90a").from_cache
    assert not nvrtc.compile_kernel(SOURCE, "mix<8>", "sm_90a", ("max_register_count=64",)).from_cache
    assert len(list(nvrtc.cache_dir().glob("*.cubin"))) == 5


def test_damaged_entry_is_compiled_again():
    first = nvrtc.compile_kernel(SOURCE, "mix<4>", "sm_90a")
    (cubin,) = nvrtc.cache_dir().glob("*.cubin")
    cubin.write_bytes(cubin.read_bytes()[:100])  # truncated, e.g. by a full disk
    again = nvrtc.compile_kernel(SOURCE, "mix<4>", "sm_90a")
    assert not again.from_cache and again.cubin == first.cubin


def _compile_in_child(cache: str, queue) -> None:
    os.environ[nvrtc.CACHE_ENV] = cache
    kernel = nvrtc.compile_kernel(SOURCE, "mix<32>", "sm_90a")
    queue.put((kernel.from_cache, kernel.cubin))


def test_concurrent_processes_compile_once(tmp_path):
    """Two processes asking for the same new variant at once: one compiles, the other reads its entry."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    children = [context.Process(target=_compile_in_child, args=(str(tmp_path), queue)) for _ in range(2)]
    for child in children:
        child.start()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert sorted(hit for hit, _ in results) == [False, True]
    assert results[0][1] == results[1][1]
    assert len(list((tmp_path / "cubin").glob("*.cubin"))) == 1


def test_compile_error_carries_the_log():
    with pytest.raises(nvrtc.CompileError, match=r"NVRTC could not compile broken for sm_90a") as info:
        nvrtc.compile_kernel("__global__ void broken() { undeclared_name = 1; }", "broken", "sm_90a")
    assert "undeclared_name" in str(info.value)
    assert not list(nvrtc.cache_dir().glob("*.cubin"))


@pytest.mark.parametrize("option", ["max_register_count", "no_such_field=1", "arch=sm_80"])
def test_bad_options(option):
    with pytest.raises(ValueError, match="options: expected 'field=value'"):
        nvrtc.compile_kernel(SOURCE, "mix<4>", "sm_90a", (option,))


def test_nvrtc_version_is_part_of_the_cache_key(monkeypatch):
    """A cubin from another NVRTC is never reused: its (major, minor) enters the cache key."""
    major, minor = nvrtc.nvrtc_version()
    assert major >= 12  # cuda-bindings >= 12.8 (pyproject.toml): NVRTC 12 or newer
    key = nvrtc._key(SOURCE, "mix<4>", "sm_90a", ())
    monkeypatch.setattr(nvrtc, "nvrtc_version", lambda: (major, minor + 1))
    assert nvrtc._key(SOURCE, "mix<4>", "sm_90a", ()) != key
