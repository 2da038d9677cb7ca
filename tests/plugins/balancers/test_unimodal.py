"""`unimodal`: each encoder learns from its own head alone, the fusion from detached encoder outputs — also
when the fusion reads token sequences (MLB's `tf`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmbench.testing import tiny_context
from mmbench_plugins.balancers.unimodal import Unimodal
from mmbench_plugins.fusions.tf import TFFusion, TFParams
from tests.fixtures.tiny_av import TINY_STACK, components

TF_PARAMS = TFParams(**{k: v for k, v in TINY_STACK.items() if k != "bottleneck"})


def test_with_a_fusion_over_tokens_encoders_get_only_their_heads_gradient_and_the_fusion_learns():
    balancer, ctx, batch = tiny_context(components(TFFusion, TF_PARAMS, Unimodal), batch_size=6)
    model = ctx.model.eval()  # no dropout: the reference pass below and the step's see the same network
    encoder = list(model.encoders["audio"].parameters())
    # what the audio encoder should receive: the gradient of its own head's loss, nothing else
    expected = torch.autograd.grad(
        F.cross_entropy(model.heads["audio"](model.encoders["audio"](batch.inputs["audio"])), batch.label),
        encoder, allow_unused=True)
    fusion_before = [p.detach().clone() for p in model.fusion.parameters()]
    ctx.optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # keep the weights: compare gradients
    loss, out = balancer.train_step(ctx, batch)
    for p, g in zip(encoder, expected):
        torch.testing.assert_close(p.grad if p.grad is not None else torch.zeros_like(p),
                                   g if g is not None else torch.zeros_like(p), rtol=1e-4, atol=1e-6)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.fusion.parameters())
    assert all(torch.equal(a, b) for a, b in zip(fusion_before, model.fusion.parameters()))
    assert torch.isfinite(loss) and set(out.unimodal) == {"audio", "visual"}
