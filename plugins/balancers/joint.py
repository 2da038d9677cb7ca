"""`joint`: plain joint training on the fused logits — the baseline every balancer is compared with."""

from __future__ import annotations

from mmbench.hookspecs import hookimpl
from mmbench.protocols import Balancer


class Joint(Balancer):
    """Cross-entropy (BCE for multi-label tasks) on the fused logits; no modulation at all."""

    name = "joint"


@hookimpl
def mmbench_balancers():
    return [Joint]
