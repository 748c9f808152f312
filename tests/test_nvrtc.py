"""NVRTC compilation through cuda-core and the on-disk cubin cache (fusedrnn.backends.cuda.nvrtc): runs
without a GPU (NVRTC compiles for any architecture on the CPU)."""

import multiprocessing
import os

import pytest

pytest.importorskip("cuda.core", reason="cuda-core is not installed (a dependency on Linux x86_64 and aarch64)")

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
    assert len(list(nvrtc.cache_dir().glob("*.entry"))) == 5
    assert {p.suffix for p in nvrtc.cache_dir().iterdir()} == {".entry"}  # no lock or temporary files


def test_damaged_entry_is_compiled_again():
    first = nvrtc.compile_kernel(SOURCE, "mix<4>", "sm_90a")
    (entry,) = nvrtc.cache_dir().glob("*.entry")
    whole = entry.read_bytes()
    for damaged in (whole[:-100], whole[:50], whole.replace(b"\n", b" ", 1), b""):  # cut short, header broken
        entry.write_bytes(damaged)
        again = nvrtc.compile_kernel(SOURCE, "mix<4>", "sm_90a")
        assert not again.from_cache and again.cubin == first.cubin and again.registers == first.registers
        assert nvrtc.compile_kernel(SOURCE, "mix<4>", "sm_90a").from_cache  # written again, whole


def _compile_in_child(cache: str, barrier, queue) -> None:
    os.environ[nvrtc.CACHE_ENV] = cache
    from cuda.core import Program  # noqa: F401  (imported before the barrier: the compilations start together)

    barrier.wait(timeout=120)
    kernel = nvrtc.compile_kernel(SOURCE, "mix<32>", "sm_90a")
    queue.put((kernel.from_cache, kernel.cubin, kernel.symbol, kernel.registers))


def test_concurrent_processes_share_one_entry(tmp_path):
    """Processes asking for the same new variant at the same moment: each gets the kernel, the cache holds
    one complete entry that a later process reads, and no lock or temporary file is left behind."""
    context = multiprocessing.get_context("spawn")
    queue, barrier = context.Queue(), context.Barrier(3)
    children = [context.Process(target=_compile_in_child, args=(str(tmp_path), barrier, queue)) for _ in range(3)]
    for child in children:
        child.start()
    results = [queue.get(timeout=180) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert not all(hit for hit, *_ in results)  # someone compiled it
    assert len({tuple(rest) for _, *rest in results}) == 1  # the same kernel everywhere
    assert [p.suffix for p in (tmp_path / "cubin").iterdir()] == [".entry"]
    os.environ[nvrtc.CACHE_ENV] = str(tmp_path)  # the fixture's monkeypatch restores it
    later = nvrtc.compile_kernel(SOURCE, "mix<32>", "sm_90a")
    assert later.from_cache and later.cubin == results[0][1]


def test_unwritable_cache_still_compiles(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")  # the cache directory would have to be made inside a file
    monkeypatch.setenv(nvrtc.CACHE_ENV, str(blocker))
    kernel = nvrtc.compile_kernel(SOURCE, "mix<2>", "sm_90a")
    assert kernel.cubin[:4] == b"\x7fELF" and not kernel.from_cache
    assert "cannot write the cubin cache entry" in caplog.text


def test_compile_error_carries_the_log():
    with pytest.raises(nvrtc.CompileError, match=r"NVRTC could not compile broken for sm_90a") as info:
        nvrtc.compile_kernel("__global__ void broken() { undeclared_name = 1; }", "broken", "sm_90a")
    assert "undeclared_name" in str(info.value)
    assert not nvrtc.cache_dir().exists() or not list(nvrtc.cache_dir().iterdir())


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
