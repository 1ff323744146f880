"""Trains the tiny Glow preset; run alone or under torchrun by test_distributed.py."""

import sys

import torch

from flowkit_image import run

if __name__ == "__main__":
    data, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    run.train(preset="tiny", data=data, out=out, steps=6, batch_size=16, seed=0, progress=False,
                    optimizer="sgd", lr=0.02)  # SGD: a wrong gradient average would show as a 2x step
