"""`flowkit text fit` under torchrun: two CPU processes (gloo) train the same weights as one."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def _fit(args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_processes_train_the_weights_of_one(tmp_path, rt_polarity):
    pos, neg = rt_polarity
    data = tmp_path / "sentences.txt"
    data.write_text("\n".join(pos[:300] + neg[:300]) + "\n")
    fit = ["text", "fit", "--data", str(data), "--steps", "6", "--preset", "affine"]
    _fit([sys.executable, "-m", "flowkit.cli", *fit, "--out", str(tmp_path / "single")])
    _fit([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
          "-m", "flowkit.cli", *fit, "--out", str(tmp_path / "ddp")])
    # Early stopping may restore the starting weights; Adam's moments always carry the six steps' gradients.
    for part in ("model", "optimizer"):
        single = load_file(tmp_path / "single" / "checkpoint" / f"{part}.safetensors")
        ddp = load_file(tmp_path / "ddp" / "checkpoint" / f"{part}.safetensors")
        assert single.keys() == ddp.keys()
        for name in single:
            # Moments: float32 gradient sums in another order differ by up to 4 % of a tensor's scale here,
            # because the whitening start scales MiniLM's three constant coordinates up 400-fold;
            # a real DDP fault (unaveraged or missing gradients) is off by 50-100 %.
            scale = float(single[name].abs().max()) if part == "optimizer" else 0.0
            torch.testing.assert_close(ddp[name], single[name], atol=1e-5 + 0.1 * scale, rtol=1e-4, msg=name)
    moments = [v for k, v in single.items() if "exp_avg" in k]
    assert moments and any(float(m.abs().max()) > 0 for m in moments)
