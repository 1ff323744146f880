"""One short, prepared GPU measurement: training throughput of the ``cifar10`` preset and
the latency of one 256x256 sample (the Glow blog: about 130 ms on a GTX 1080 Ti).

    python -m benchmarks.gpu                      # on a GPU: every mode below
    python -m benchmarks.gpu --tiny --device cpu  # the test suite's CPU smoke run

Modes: ``fp32``; ``bf16-conditioners`` (flowkit.precision: only the coupling and prior
networks in bfloat16, everything else float32, the training option
``--precision bf16-conditioners``); ``bf16 autocast`` (the whole model under autocast; the
1x1 mixing layers keep their log-det and inverse in float64, log-dets are summed in
float32); ``compiled`` (fp32: the training loss under ``torch.compile``, sampling compiled
with frozen weights by ``flowkit.compile_frozen``); ``compiled bf16-conditioners`` (both
options, the fastest on the CPU, see docs/benchmarks.md). Writes
benchmarks/results/gpu.json (or gpu_tiny.json) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch

import flowkit as fk
from benchmarks._common import NO_BF16, RESULTS, cifar, cifar_source, dequantise, options, table, write
from flowkit_image import Glow, GlowConfig
from flowkit_image.presets import preset


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


MODES = ("fp32", "bf16-conditioners", "bf16 autocast", "compiled", "compiled bf16-conditioners")


def autocast(device: torch.device, mode: str):
    return torch.autocast(device.type, dtype=torch.bfloat16) if mode == "bf16 autocast" else contextlib.nullcontext()


def _model(cfg: GlowConfig, device: torch.device, mode: str) -> Glow:
    torch.manual_seed(0)
    model = Glow(cfg).to(device)
    if mode.endswith("bf16-conditioners"):
        fk.set_conditioner_precision(model, "bf16-conditioners", device)
    return model


def train_throughput(cfg: GlowConfig, batch: int, steps: int, device: torch.device, mode: str) -> dict:
    model = _model(cfg, device, mode)
    model.validate = False
    x = dequantise(cifar("train", batch), torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        model(x)
    opt = torch.optim.Adamax(model.parameters(), lr=1e-4)

    def loss_fn(images):
        with autocast(device, mode):
            return model.nll_to_bits_per_dim(model(images)).mean()

    compute = torch.compile(loss_fn) if mode.startswith("compiled") else loss_fn

    def step():
        loss = compute(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    step()  # compile (or warm up) outside the timing
    seconds = timed(step, device, steps)
    loss = float(step().detach())
    return {"images_per_s": round(batch / seconds, 1), "step_ms": round(1000 * seconds, 1),
            "bits_per_dim": round(loss, 3)}


def sample_latency(cfg: GlowConfig, device: torch.device, repeats: int, mode: str) -> float:
    model = _model(cfg, device, mode).eval()
    draw = fk.compile_frozen(model.sample, model) if mode.startswith("compiled") else model.sample
    with torch.no_grad(), autocast(device, mode):
        return 1000 * timed(lambda: draw(1, temperature=0.7), device, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="small sizes for a CPU smoke run")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=None, help="default: all on a GPU")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    device = torch.device(args.device)
    train_cfg = GlowConfig(**preset("cifar10")["glow"])
    sample_cfg = GlowConfig(**preset("celeba-hq-256")["glow"], image_shape=(3, 256, 256))
    if args.tiny:
        train_cfg = GlowConfig(levels=2, depth=2, width=16)
        sample_cfg = GlowConfig(levels=2, depth=2, width=16, coupling="additive", n_bits=5, image_shape=(3, 64, 64))
        args.batch, args.steps = 4, 2
    rows = []
    modes = args.modes or (MODES if device.type == "cuda" else ("fp32", "bf16-conditioners", "bf16 autocast"))
    skipped = [mode for mode in modes if "bf16" in mode and not fk.bf16_supported(device)]
    for mode in (m for m in modes if m not in skipped):
        row = {"precision": mode}
        row.update(train_throughput(train_cfg, args.batch, args.steps, device, mode))
        row["sample_ms"] = round(sample_latency(sample_cfg, device, max(1, args.steps // 2), mode), 1)
        rows.append(row)
    print(table(rows, list(rows[0])))
    if skipped:
        print(f"note: {NO_BF16.replace('CPU', device.type)}: skipped {', '.join(skipped)}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    path = write("gpu_tiny" if args.tiny else "gpu",
                 {"device": name, "options": options(args), "data": cifar_source("train", args.batch),
                  "train_config": train_cfg.to_dict(), "sample_config": sample_cfg.to_dict(),
                  "batch": args.batch, "results": rows, "skipped_no_bf16": skipped}, args.results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
