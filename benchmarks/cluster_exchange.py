"""The per-step h exchange of a head split over a thread-block cluster (the critical path of the cluster kernels),
measured alone.

Every CTA of a cluster owns a slice of h (``--slice`` bytes: its units × the batch rows × the element size) and
each step sends it to every CTA of the cluster (itself included), then waits for all slices of that step. Two
ways, both through distributed shared memory, both double-buffered by step parity:

- ``barrier``: remote 16-byte stores (st.shared::cluster), then a full cluster barrier (arrive.release /
  wait.acquire) — what ../shared/anchors measured as the cluster floors;
- ``mbarrier``: asynchronous remote stores that complete on the receiving CTA's mbarrier (st.async ...
  mbarrier::complete_tx::bytes); a CTA waits only for the bytes it expects (one expect_tx arrival per step), no
  cluster-wide barrier;
- ``grid`` (no cluster, ``--grids``): co-resident CTAs exchange through global memory and an arrival counter
  (release add, acquire poll), every CTA reading every slice from L2 — the cooperative-grid variant's exchange.

Every step each thread checks one received word against the value its sender stored (the count of wrong
words is printed). Time per step = (time of ``--steps`` steps - time of 16 steps) / (steps - 16), CUDA events,
median of ``--reps``. Kernels are compiled with NVRTC (fusedrnn.backends.cuda.nvrtc) and launched with cuda-core's
cluster launch; clusters larger than 8 CTAs use the non-portable cluster size attribute. Needs sm_90.

    python benchmarks/cluster_exchange.py --clusters 2 4 8 16 --slice 1536
"""

from __future__ import annotations

import argparse
import statistics

import torch

SOURCE = r"""
typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ u32 smem_u32(const void* p) {
  return (u32)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ u32 cluster_rank() {
  u32 r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
__device__ __forceinline__ u32 cluster_size() {
  u32 r;
  asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(r));
  return r;
}
__device__ __forceinline__ u32 remote(u32 local, u32 rank) {  // the same shared address in CTA `rank`
  u32 r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(local), "r"(rank));
  return r;
}
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
  u32 done;
  do {
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;"
                 " selp.u32 %0, 1, 0, p; }" : "=r"(done) : "r"(bar), "r"(parity) : "memory");
  } while (!done);
}

// smem: two buffers of NCTA slices (step parity), then two mbarriers
template <int MODE>  // 0: barrier, 1: mbarrier
__global__ void exchange(int steps, int slice_bytes, unsigned int* errors) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int ncta = (int)cluster_size();  // the grid is one cluster
  const u32 me = cluster_rank();
  const int buf_bytes = ncta * slice_bytes, chunks = slice_bytes / 16;
  unsigned char* bufs = smem;
  const u32 bars = smem_u32(smem + 2 * buf_bytes);
  if (MODE == 1 && threadIdx.x == 0) {
    for (int b = 0; b < 2; ++b)
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(bars + 8 * b) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  cluster_sync();
  u32 wrong = 0;
  for (int t = 0; t < steps; ++t) {
    const int b = t & 1;
    const u32 local = smem_u32(bufs + b * buf_bytes + me * slice_bytes);
    if (MODE == 1 && threadIdx.x == 0)
      asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bars + 8 * b), "r"(buf_bytes)
                   : "memory");
    // this step's slice (some value that depends on the step), to every CTA of the cluster
    for (int i = threadIdx.x; i < chunks * ncta; i += blockDim.x) {
      const u32 peer = (u32)(i / chunks), c = (u32)(i % chunks);
      const u32 v = (u32)t * 2654435761u + c, dst = remote(local + 16 * c, peer);
      if (MODE == 0) {
        asm volatile("st.shared::cluster.v4.u32 [%0], {%1, %1, %1, %1};" ::"r"(dst), "r"(v) : "memory");
      } else {
        const u32 rbar = remote(bars + 8 * b, peer);
        asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %1, %1, %1}, [%2];"
                     ::"r"(dst), "r"(v), "r"(rbar) : "memory");
      }
    }
    if (MODE == 0) cluster_sync();
    else mbar_wait(bars + 8 * b, (u32)(t >> 1) & 1u);
    // read (and check) one word of a slice, as the next step's MMAs would read them all
    const int k = threadIdx.x % ncta, c = threadIdx.x % chunks;
    wrong += *(const u32*)(bufs + b * buf_bytes + k * slice_bytes + 16 * c) != (u32)t * 2654435761u + (u32)c;
  }
  cluster_sync();  // no CTA leaves while a peer may still write into its shared memory
  if (wrong) atomicAdd(errors, wrong);
}

// The same exchange in a grid of co-resident CTAs through global memory: slices [2][G][slice] in hbuf; a CTA
// writes its slice, thread 0 adds 1 to counter (release) and waits for G·(t + 1) arrivals (acquire); then every
// thread reads the whole h from L2 (ld.global.cg: not from a stale L1 line).
__global__ void exchange_grid(int steps, int slice_bytes, u32* counter, unsigned char* hbuf, u32* errors) {
  const int G = (int)gridDim.x, me = (int)blockIdx.x, chunks = slice_bytes / 16;
  const long long buf_bytes = (long long)G * slice_bytes;
  u32 wrong = 0;
  for (int t = 0; t < steps; ++t) {
    unsigned char* buf = hbuf + (t & 1) * buf_bytes;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
      const u32 v = (u32)t * 2654435761u + (u32)c;
      *(uint4*)(buf + (long long)me * slice_bytes + 16 * c) = make_uint4(v, v, v, v);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counter) : "memory");
      const u32 target = (u32)G * (u32)(t + 1);
      u32 seen;
      do {
        asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
      } while (seen < target);
      __threadfence();
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * chunks; i += blockDim.x) {
      const int k = i / chunks, c = i % chunks;
      u32 w;
      asm volatile("ld.global.cg.u32 %0, [%1];" : "=r"(w) : "l"(buf + (long long)k * slice_bytes + 16 * c) : "memory");
      wrong += w != (u32)t * 2654435761u + (u32)c;
    }
  }
  if (wrong) atomicAdd(errors, wrong);
}
"""


def _kernel(mode: int, arch: str):
    from cuda.bindings import driver
    from cuda.core import ObjectCode

    from fusedrnn.backends.cuda.nvrtc import compile_kernel

    compiled = compile_kernel(SOURCE, f"exchange<{mode}>" if mode < 2 else "exchange_grid", arch)
    kernel = ObjectCode.from_cubin(compiled.cubin).get_kernel(compiled.symbol.encode())
    handle = kernel.handle
    for attr, value in (
        (driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1),
        (driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 200 * 1024),
    ):
        if isinstance(handle, driver.CUkernel):
            (err,) = driver.cuKernelSetAttribute(attr, value, handle, driver.CUdevice(torch.cuda.current_device()))
        else:
            (err,) = driver.cuFuncSetAttribute(handle, attr, value)
        if err != driver.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"cannot set {attr}: {err}")
    return kernel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--slice", type=int, nargs="+", default=[192, 768, 1536], help="bytes per CTA and step")
    parser.add_argument("--grids", type=int, nargs="*", default=[16, 32, 64, 128], help="CTAs of the grid exchange")
    parser.add_argument("--grid-slice", type=int, nargs="+", default=[256, 768], help="bytes per CTA and step")
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=256)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args(argv)
    from cuda.core import Device, LaunchConfig, Stream, launch

    Device(torch.cuda.current_device()).set_current()
    major, minor = torch.cuda.get_device_capability()
    arch = f"sm_{major}{minor}{'a' if major >= 9 else ''}"
    stream = Stream.from_handle(torch.cuda.current_stream().cuda_stream)
    errors = torch.zeros(1, dtype=torch.int32, device="cuda")
    counter = torch.zeros(1, dtype=torch.int32, device="cuda")

    def measure(label: str, config, kernel, *kernel_args) -> None:
        """Print the ns per step of ``kernel`` (first argument: the step count) and its wrong received words."""

        def elapsed_ms(steps: int) -> float:
            counter.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            launch(stream, config, kernel, steps, *kernel_args)
            end.record()
            end.synchronize()
            return start.elapsed_time(end)

        for _ in range(3):
            elapsed_ms(args.steps)
        errors.zero_()
        times = [(elapsed_ms(args.steps) - elapsed_ms(16)) * 1e6 / (args.steps - 16) for _ in range(args.reps)]
        wrong = int(errors.item())
        checked = "data ok" if wrong == 0 else f"{wrong} WRONG WORDS"
        print(f"{label}  {statistics.median(times):8.1f} ns/step  {checked}")

    print(f"{torch.cuda.get_device_name()}, {args.threads} threads per CTA, ns per step (median of {args.reps})")
    for mode, name in ((0, "barrier"), (1, "mbarrier")):
        kernel = _kernel(mode, arch)
        for n in args.clusters:
            for slice_bytes in args.slice:
                config = LaunchConfig(
                    grid=(1, 1, 1),
                    cluster=(n, 1, 1),  # grid in clusters
                    block=(args.threads, 1, 1),
                    shmem_size=2 * n * slice_bytes + 16,
                )
                measure(
                    f"{name:9s} cluster {n:2d}  {slice_bytes:5d} B/CTA to each peer",
                    config,
                    kernel,
                    slice_bytes,
                    errors.data_ptr(),
                )
    # the grid exchange (no cluster; every CTA must be resident at once: at most one per SM here)
    kernel = _kernel(2, arch)
    for g in [g for g in args.grids if g <= torch.cuda.get_device_properties(0).multi_processor_count]:
        for slice_bytes in args.grid_slice:
            hbuf = torch.empty(2 * g * slice_bytes, dtype=torch.uint8, device="cuda")
            config = LaunchConfig(grid=(g, 1, 1), block=(args.threads, 1, 1), shmem_size=0)
            measure(
                f"grid      CTAs {g:4d}  {slice_bytes:5d} B/CTA, all read by every CTA",
                config,
                kernel,
                slice_bytes,
                counter.data_ptr(),
                hbuf.data_ptr(),
                errors.data_ptr(),
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
