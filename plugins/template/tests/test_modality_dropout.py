"""The example plugin's own tests: mmbench's balancer contract in one line, and the method's arithmetic."""

import torch
from mmbench_example_balancer.modality_dropout import ModalityDropout

from mmbench.testing import check_balancer, tiny_components, tiny_context


def test_contract():
    check_balancer(ModalityDropout)


def test_without_dropping_the_loss_is_the_fused_task_loss():
    balancer, ctx, batch = tiny_context(tiny_components(ModalityDropout, balancer_params={"p": 0.0}))
    out = ctx.model(batch.inputs)
    expected = torch.nn.functional.cross_entropy(out.logits, batch.label)
    torch.testing.assert_close(balancer.loss(ctx, batch, out), expected)
    assert balancer.coefficients() == {"dropped_fraction": 0.0}


def test_every_sample_keeps_at_least_one_modality():
    torch.manual_seed(0)
    balancer, ctx, batch = tiny_context(tiny_components(ModalityDropout, balancer_params={"p": 0.95}))
    out = ctx.model(batch.inputs)
    balancer.loss(ctx, batch, out)
    dropped = balancer.coefficients()["dropped_fraction"]
    assert 0.4 < dropped <= 0.5  # two modalities: at most one of them is ever dropped from a sample
