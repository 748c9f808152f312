"""The one place that decides what a CUDA call launches: ``plan(call)``.

For each kernel a call needs (the forward; the backward too when it trains) the plan picks the kernel family, its
shape (from the family's resource model, ``model.kernel_shape``) and the batch rows per CTA, from the call and the
facts of its device (``DeviceFacts``). ``run`` (launch.py), ``supports()`` (__init__.py) and ``python -m fusedrnn
info`` all ask it, so what is reported as supported is what runs.

Families in the order the model tries them (see docs/architecture.md): one CTA per (head, batch tile) — ``cta``, or
``transposed`` from D = 128 —, a thread-block cluster per head (``cluster``, sm_90), the forward over a cluster with
K split over the warps (``split_k``), a cooperative grid per head (``grid``).

Sweeps force a variant with ``forced(forward=..., backward=...)``: within it, every plan answers with the given
variants (for the calls whose kind they are), whatever the model would pick.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import torch

from .kernels import Variant, variant
from .resources import Limits, device_limits
from .split_k import SPLIT_ROWS

__all__ = ["CallPlan", "DeviceFacts", "device_facts", "plan", "plan_kernel", "forced"]


@dataclasses.dataclass(frozen=True)
class DeviceFacts:
    """What the plan needs of a device: its resource limits (SMs included) and how many clusters of n CTAs, one CTA
    per SM, are resident at once (``resident``: (n, clusters) pairs; None: asked of the driver when needed)."""

    index: int
    limits: Limits
    resident: tuple[tuple[int, int], ...] | None = None

    def clusters_resident(self, cluster: int) -> int:
        if self.resident is not None:
            found = dict(self.resident).get(cluster)
            if found is None:
                raise ValueError(
                    f"cluster: no resident count given for clusters of {cluster} CTAs (given: {dict(self.resident)})"
                )
            return found
        from .launch import cluster_capacity

        return cluster_capacity(self.index, cluster)


@functools.cache
def _limits(device_index: int) -> Limits:
    return device_limits(device_index)


def device_facts(device_index: int) -> DeviceFacts:
    """The facts of CUDA device ``device_index`` (its limits read once per process)."""
    return DeviceFacts(device_index, _limits(device_index))


@dataclasses.dataclass(frozen=True)
class CallPlan:
    """The kernels of a call: the forward's variant, and the backward's when the call trains."""

    forward: Variant
    backward: Variant | None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


_FORCED: dict[str, Variant] = {}


@contextlib.contextmanager
def forced(forward: Variant | None = None, backward: Variant | None = None):
    """Within: plans answer ``forward`` / ``backward`` (where given) for every call of that kind, instead of the
    model's pick; for sweeps that time tilings the model would not choose. Not thread-safe (one sweep at a time)."""
    saved = dict(_FORCED)
    for kind, v in (("forward", forward), ("backward", backward)):
        if v is not None:
            if v.kind != kind:
                raise ValueError(f"{kind}: expected a {kind} variant, got a {v.kind} one ({v.name})")
            _FORCED[kind] = v
    try:
        yield
    finally:
        _FORCED.clear()
        _FORCED.update(saved)


_PLANS: dict[tuple, Variant | str] = {}
_MAX_PLANS = 4096  # distinct calls remembered (then forgotten all at once)


def plan_kernel(
    kind: str, cell_name: str, head_dim: int, dtype: torch.dtype, batch: int, num_heads: int, facts: DeviceFacts
) -> Variant | str:
    """The variant of kernel ``kind`` ("forward" / "backward") a call runs, or why none: remembered per call and
    device facts (dispatch asks twice per call, training four times)."""
    forced = _FORCED.get(kind)
    if forced is not None:
        return forced
    key = (kind, cell_name, head_dim, dtype, batch, num_heads, facts)
    found = _PLANS.get(key)
    if found is None:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        found = _PLANS[key] = _pick(kind, cell_name, head_dim, dtype_name(dtype), batch, num_heads, facts)
    return found


def plan(call, facts: DeviceFacts | None = None) -> CallPlan | str:
    """The kernels of ``call`` (a ``fusedrnn.backends.Call`` on a CUDA device), or why the backend cannot run it.
    ``facts``: the device's (default: read from ``call.device``)."""
    facts = facts if facts is not None else device_facts(call.device.index or 0)
    found = {}
    for kind in ("forward", "backward") if call.requires_grad else ("forward",):
        v = plan_kernel(kind, call.cell.name, call.head_dim, call.dtype, call.batch, call.num_heads, facts)
        if isinstance(v, str):
            return v
        found[kind] = v
    return CallPlan(found["forward"], found.get("backward"))


def _pick(
    kind: str, cell_name: str, head_dim: int, dtype: str, batch: int, num_heads: int, facts: DeviceFacts
) -> Variant | str:
    """8 batch rows per CTA where (heads x batch tiles of 8 x CTAs per head) still fit on the SMs in one wave (a
    step's work per thread halves; the MMAs stay), else 16. A head over a cluster whose 16-row variant the model
    refuses (LSTM D = 768: the h buffers and output stages double) takes the 8-row one in several waves of
    clusters: each runs on its own. A head over a cooperative grid (16 rows only) is refused where its CTAs would
    not all be resident at one per SM. The forward with K split over the warps takes 1 to 8 rows: the fewest waves
    of clusters, then the fewest rows (less to exchange per step)."""
    limits, sms = facts.limits, facts.limits.sms
    found = variant(kind, cell_name, dtype, head_dim, limits, 8)
    if not isinstance(found, str) and found.family == "split_k":
        return _fewest_waves(kind, cell_name, head_dim, dtype, batch, num_heads, facts)
    if not isinstance(found, str) and num_heads * -(-batch // 8) * found.shape.cluster_size <= sms:
        return found
    wide = variant(kind, cell_name, dtype, head_dim, limits, 16)
    ctas = num_heads * -(-batch // 16) * (wide.shape.ctas_per_head if not isinstance(wide, str) else 0)
    if not isinstance(wide, str) and wide.shape.cooperative and ctas > sms:
        # a cooperative grid's CTAs must all be resident: one per SM
        wide = (
            f"no {kind} variant of {cell_name} with head_dim {head_dim} fits this call: the cooperative grid "
            f"needs every CTA resident, {num_heads} heads x {-(-batch // 16)} batch tiles of 16 x "
            f"{wide.shape.ctas_per_head} CTAs > {sms} SMs"
        )
    if isinstance(wide, str) and not isinstance(found, str) and found.shape.cluster_size > 1:
        return found  # 8 rows in several waves of clusters
    return wide


def _fewest_waves(
    kind: str, cell_name: str, head_dim: int, dtype: str, batch: int, num_heads: int, facts: DeviceFacts
) -> Variant:
    """The K-split forward in SPLIT_ROWS rows per CTA with the fewest waves of clusters (clusters over the clusters
    resident at once), then the fewest rows (docs/large_heads.md has the measurements behind the order)."""
    options = []
    for rows in SPLIT_ROWS:
        v = variant(kind, cell_name, dtype, head_dim, facts.limits, rows)
        if isinstance(v, str):
            continue
        clusters = num_heads * -(-batch // rows)
        waves = -(-clusters // facts.clusters_resident(v.shape.cluster_size))
        options.append((waves, rows, v))
    return min(options, key=lambda option: option[:2])[2]
