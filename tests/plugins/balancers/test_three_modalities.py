"""Three modalities through the core and every balancer: grids/synthetic3.yaml (cut to a tiny run) trains every
cell or skips it with the reason — never a crash — and each cell reports per-modality and missing-modality
metrics for all three modalities."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from mmbench.cli import app
from tests import ROOT

GRID = ROOT / "grids" / "synthetic3.yaml"
#: what may not run three modalities (declared, so the cells are skipped with the reason), with the fusion
#: each of these balancers needs
TWO_ONLY_BALANCERS = {"greedy": "mmtm", "pm_mo": "gmu", "midas": "concat"}
TWO_ONLY_FUSIONS = {"gmu", "film", "gated"}


def test_every_balancer_runs_three_modalities_or_is_skipped_with_the_reason(tmp_path):
    grid = yaml.safe_load(GRID.read_text())
    grid["tasks"][0]["params"].update(train_size=64, val_size=32, test_size=32)
    grid["encoders"] = [{"*": {"name": "mlp", "params": {"hidden": 8, "layers": 2, "out_dim": 8}}}]
    grid["train"].update(epochs=1, batch_size=32, device="cpu")
    grid["seeds"] = [0]
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    result = CliRunner().invoke(app, ["run", "--matrix", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    cells = [json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*.json")]
    assert {c["status"] for c in cells} == {"ok", "skipped"}, [(c["balancer"]["name"], c.get("reason"))
                                                               for c in cells if c["status"] not in ("ok", "skipped")]
    ran = {c["balancer"]["name"] for c in cells if c["status"] == "ok"}
    assert ran == set(grid["balancers"]) - set(TWO_ONLY_BALANCERS)
    for c in cells:
        fusion = (c.get("fusion") or {}).get("name")
        assert fusion not in TWO_ONLY_FUSIONS or c["status"] == "skipped"
        if fusion in TWO_ONLY_FUSIONS and c["balancer"]["name"] == "joint":
            assert c["reason"] == f"fusion {fusion!r} fuses at most 2 modalities; 'synthetic' has 3"
        if c["status"] == "ok":
            assert set(c["test"]["unimodal"]) == set(c["test"]["missing_modality"]) == {"fast", "slow", "mid"}
    reasons = {name: c["reason"] for c in cells for name, fusion in TWO_ONLY_BALANCERS.items()
               if c["balancer"]["name"] == name and c["fusion"]["name"] == fusion}
    assert reasons == {"greedy": "greedy handles 2..2 modalities; 'synthetic' has 3",
                       "pm_mo": "fusion 'gmu' fuses at most 2 modalities; 'synthetic' has 3",
                       "midas": "midas handles 2..2 modalities; 'synthetic' has 3"}
