"""clipae-train under torchrun: two CPU processes (gloo) train the same model as one process."""
import os
import subprocess
import sys

import pytest
import torch

from clipae.cli import train_main
from clipae.models.synthetic import SyntheticSpec, generate

SETTINGS = ["data.num_segments=32", "model.hidden_dim=16", "model.attention_dim=8", "model.caf_dim=8",
            "model.ccp_dim=8", "model.dropout=0.0", "train.lr=1e-3", "train.batch_size=4", "train.threads=1",
            "train.epochs_per_round=2"]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    spec = SyntheticSpec(train=12, test=0, classes=3, snippets=40,
                         dims={"i3d_rgb": 16, "i3d_flow": 16, "clip": 16, "vggish": 8}, no_audio=0.0)
    data = generate(tmp_path / "data", spec)
    args = ["--manifest", str(data["manifest"]), "--annotations", str(data["ground_truth"]), "--rounds", "2", "--quiet"]
    for s in SETTINGS:
        args += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "clipae", "train", *args, "--out", str(tmp_path / "ddp")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert train_main([*args, "--out", str(tmp_path / "one")]) == 0
    a = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)
    assert a["complete"] and a["assignments"] == b["assignments"]
    for k in b["model"]:                                                 # same global batches, averaged gradients
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=2e-4, rtol=1e-3)
    for k in b["loss"]:                                                  # memory bank gathered from both ranks
        torch.testing.assert_close(a["loss"][k], b["loss"][k], atol=2e-4, rtol=1e-3)
    assert "2 process(es)" in (tmp_path / "ddp" / "train.log").read_text()
