"""When a tensor derived from a weight (its GEMM layout, a dense expansion of heads) may be reused: ``fingerprint``.

A weight changes in place by torch ops, which bump its version counter (``_version``, shared with its views), or
by an optimizer step: torch's fused optimizers (``Adam(fused=True)``) write the parameters without bumping it, so
every ``torch.optim`` step also counts here (torch's global step hook). Writes through ``.data`` are seen by
neither: change weights with torch ops under ``torch.no_grad()`` instead.
"""

from __future__ import annotations

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

__all__ = ["fingerprint"]

_optimizer_steps = 0


def _count_optimizer_step(*_: object) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_optimizer_step)


def fingerprint(t: torch.Tensor) -> tuple | None:
    """Equal for two looks at ``t`` exactly when no change of its values was seen in between (see above); None for
    a tensor whose changes cannot be seen (an inference tensor has no version counter): never reuse then."""
    if t.is_inference():
        return None
    return (t.data_ptr(), t._version, _optimizer_steps, t.dtype, t.device, t.shape, t.stride())
