"""`joint`: plain joint training on the fused logits — the baseline every balancer is compared with."""

from __future__ import annotations

from mmbench.api import Balancer, hookimpl


class Joint(Balancer):
    """Cross-entropy (BCE for multi-label tasks) on the fused logits; no modulation at all."""

    name = "joint"
    is_baseline = True


@hookimpl
def mmbench_balancers() -> list[type[Balancer]]:
    return [Joint]
