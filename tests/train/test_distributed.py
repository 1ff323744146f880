"""DDP with 2 CPU processes (gloo) ends with the same weights as 1 process on the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, cifar_train):
    images = cifar_train[0][:256].permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "data.npz", images=images)
    _run([sys.executable, str(WORKER), str(tmp_path / "data.npz"), str(tmp_path / "single")])
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
          str(WORKER), str(tmp_path / "data.npz"), str(tmp_path / "ddp")])
    single = load_file(tmp_path / "single" / "checkpoint" / "model.safetensors")
    ddp = load_file(tmp_path / "ddp" / "checkpoint" / "model.safetensors")
    assert single.keys() == ddp.keys()
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], atol=1e-5, rtol=1e-4, msg=name)
    trained = [k for k in single if k.endswith("conv_out.layer.weight") and single[k].abs().max() > 0]
    assert trained, "the zero-initialised output convolutions never moved: no training happened"
