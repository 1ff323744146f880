"""``flowkit image ...``: the Glow run (train, evaluate, sample, edits) on the command line.

    flowkit image train --preset cpu --data PATH --steps N --out DIR [--resume] [--seed S]
    flowkit image evaluate --checkpoint DIR --data PATH --json
    flowkit image sample --checkpoint DIR --temperature T --n N --out FILE.png
    flowkit image reconstruct | interpolate | manipulate | demo
"""

from __future__ import annotations

import argparse

from flowkit.cli import (
    add_training_flags,
    finite_float,
    json_line,
    non_negative_float,
    non_negative_int,
    note_resumed,
    positive_float,
    positive_int,
    seed,
)
from flowkit.errors import FlowkitError
from flowkit.memory import MEMORY_MODES
from flowkit.precision import PRECISIONS

from . import demo, run
from .presets import PRESETS

ARCHITECTURE_FLAGS = ("levels", "depth", "width", "coupling", "permutation", "n_bits")


def n_bits(text: str) -> int:
    """argparse type: bits per colour channel, 1..8."""
    value = positive_int(text)
    if value > 8:
        raise argparse.ArgumentTypeError(f"must be between 1 and 8, got {value}")
    return value


def _precision_flag(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--precision", default=default, choices=list(PRECISIONS),
                   help="bf16-conditioners: coupling and prior networks in bfloat16 (log-dets, 1x1, ActNorm and "
                        "the loss stay float32); float32 where the CPU lacks bfloat16")


def _train(args: argparse.Namespace) -> None:
    overrides = {k: getattr(args, k) for k in ARCHITECTURE_FLAGS if getattr(args, k) is not None}
    metrics = run.train(preset=args.preset, data=args.data, out=args.out, steps=args.steps, resume=args.resume,
                              seed=args.seed, eval_data=args.eval_data, batch_size=args.batch_size, lr=args.lr,
                              warmup_steps=args.warmup_steps,
                              minutes=args.minutes, hflip=args.hflip, class_conditional=args.class_conditional,
                              device=args.device, optimizer=args.optimizer,
                              weight_y=args.weight_y, memory=args.memory, compile_step=args.compile or None,
                              checkpoint_every=args.checkpoint_every, precision=args.precision,
                              optimizer_in_backward=args.optimizer_in_backward or None, **overrides)
    print(json_line({k: v for k, v in metrics.items() if k in ("step", "bits_per_dim", "eval_bits_per_dim")}))
    note_resumed(metrics)


def _evaluate(args: argparse.Namespace) -> None:
    result = run.evaluate(args.checkpoint, args.data, ema=not args.no_ema, batch_size=args.batch_size,
                                precision=args.precision)
    if args.json:
        print(json_line(result))
    else:
        print(f"{result['bits_per_dim']:.4f} bits/dim ({result['n_bits']}-bit, {result['images']} images)")


def _sample(args: argparse.Namespace) -> None:
    print(run.sample(args.checkpoint, args.out, args.temperature, args.n, args.seed, args.label, args.precision))


def _reconstruct(args: argparse.Namespace) -> None:
    print(json_line(run.reconstruct(args.checkpoint, args.data, args.n, args.out)))


def _interpolate(args: argparse.Namespace) -> None:
    if (args.a is None) != (args.b is None):
        raise FlowkitError("give both --a and --b (the indices of the two images), or neither")
    pairs = [(args.a, args.b)] if args.a is not None else None
    print(run.interpolate(args.checkpoint, args.out, args.data, pairs, args.steps))


def _alphas(text: str) -> tuple[float, ...]:
    """argparse type: comma-separated finite numbers."""
    return tuple(finite_float(part) for part in text.split(","))


def _manipulate(args: argparse.Namespace) -> None:
    direction, classes = args.positive is not None or args.negative is not None, args.source is not None
    if direction == classes or (direction and None in (args.positive, args.negative)):
        raise FlowkitError("give --positive and --negative (a direction edit, unconditional models) or --from and "
                           "--to (class transfer, class-conditional models)")
    if classes:
        targets = [t for t in (args.to or "").split(",") if t] or None
        print(json_line(run.transfer_classes(args.checkpoint, args.out, args.source, targets, args.edit_data, args.n)))
        return
    print(json_line(run.manipulate(args.checkpoint, args.out, args.positive, args.negative, args.data,
                                   args.edit_data, args.n, args.alphas, args.scale)))


def _demo(args: argparse.Namespace) -> None:
    result = demo.run(args.out, args.steps, args.seed, overwrite=args.overwrite)
    print(f"bits/dim on {result['images']} held-out CIFAR-10 images ({result['n_bits']}-bit): "
          f"{result['initial_bits_per_dim']:.3f} untrained -> {result['bits_per_dim']:.3f} "
          f"after {result['steps']} steps")
    print(f"wrote {args.out}/: bits_per_dim.json samples.png samples_t0.7.png interpolation.png "
          f"reconstruction.png manipulation.png metrics.jsonl metrics.png checkpoint/")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Entry point of the ``flowkit.plugins`` group: adds ``flowkit image``."""
    image = subparsers.add_parser("image", help="Glow on images", description="Glow on images.")
    commands = image.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("train", help="train a Glow")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS), help="default: cpu (a resumed run keeps its own)")
    p.add_argument("--data", default=None, help=".npz, image folder, CIFAR-10 binary folder/file, or 'demo' (default)")
    p.add_argument("--eval-data", default=None, help="held-out images (default: the demo test split, or 5%% of --data)")
    add_training_flags(p, out_default="out/glow")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="global batch (split across torchrun processes)")
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: the preset's)")
    p.add_argument("--warmup-steps", type=non_negative_int, default=None,
                   help="linear learning-rate warmup (default: the preset's)")
    p.add_argument("--optimizer", default=None, choices=["adamax", "adam", "sgd"], help="default: the preset's")
    p.add_argument("--hflip", action="store_true", default=None,
                   help="random horizontal flips (a resumed run keeps its own choice)")
    p.add_argument("--class-conditional", action="store_true", help="class-conditional top prior")
    p.add_argument("--weight-y", type=non_negative_float, default=0.0,
                   help="with --class-conditional: weight of openai's auxiliary classifier (openai: 0.01)")
    p.add_argument("--device", default=None, help='cpu, cuda, cuda:1, ... (default: cuda when there is one)')
    p.add_argument("--levels", type=positive_int, default=None, help="override the preset's L")
    p.add_argument("--depth", type=positive_int, default=None, help="override the preset's K")
    p.add_argument("--width", type=positive_int, default=None, help="override the preset's coupling width")
    p.add_argument("--coupling", default=None, choices=["affine", "additive"], help="override the preset's coupling")
    p.add_argument("--permutation", default=None, choices=["conv", "conv_lu", "shuffle", "reverse"],
                   help="override the preset's channel mixing (conv: invertible 1x1)")
    p.add_argument("--n-bits", type=n_bits, default=None, help="bits per colour channel (1..8)")
    p.add_argument("--memory", default=None, choices=list(MEMORY_MODES),
                   help="backprop mode: reversible keeps activation memory flat in depth; "
                        "reversible+boundaries also keeps each level's input to bound drift")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training step (faster steps after a compile of a minute or more)")
    p.add_argument("--optimizer-in-backward", action="store_true",
                   help="update each parameter during backward and free its gradient: with --memory reversible "
                        "a step's memory hardly grows with depth")
    _precision_flag(p, None)
    p.set_defaults(run=_train)

    p = commands.add_parser("evaluate", help="held-out bits/dim")
    p.add_argument("--checkpoint", required=True, help='a Glow run folder or its checkpoint/')
    p.add_argument("--data", default="demo",
                   help="images: .npz, image folder, CIFAR-10 binary, or 'demo' (the embedded test split)")
    p.add_argument("--json", action="store_true", help='print one JSON object')
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA ones")
    p.add_argument("--batch-size", type=positive_int, default=200, help='images per forward pass')
    _precision_flag(p, "float32")
    p.set_defaults(run=_evaluate)

    p = commands.add_parser("sample", help="a grid of samples, or many samples as an array")
    p.add_argument("--checkpoint", required=True, help='a Glow run folder or its checkpoint/')
    p.add_argument("--temperature", type=non_negative_float, default=0.7,
                   help='scale of the latent noise (openai: 0.7)')
    p.add_argument("--n", type=positive_int, default=64, help='how many samples')
    p.add_argument("--out", required=True,
                   help="a picture (.png, .jpg; up to 4096 samples) or a .npy file: uint8 (N, H, W, C), drawn in "
                        "batches, for any number")
    p.add_argument("--seed", type=seed, default=0, help='random seed')
    p.add_argument("--label", type=int, default=None, help="class of a class-conditional model")
    _precision_flag(p, None)
    p.set_defaults(run=_sample)

    p = commands.add_parser("reconstruct", help="encode/decode error on real images")
    p.add_argument("--checkpoint", required=True, help='a Glow run folder or its checkpoint/')
    p.add_argument("--data", default="demo",
                   help="images: .npz, image folder, CIFAR-10 binary, or 'demo' (the embedded test split)")
    p.add_argument("--n", type=positive_int, default=16, help='how many images (the first n of the data)')
    p.add_argument("--out", default=None, help='a picture of the originals over their reconstructions (optional)')
    p.set_defaults(run=_reconstruct)

    p = commands.add_parser("interpolate", help="a strip between two images")
    p.add_argument("--checkpoint", required=True, help='a Glow run folder or its checkpoint/')
    p.add_argument("--data", default="demo",
                   help="images: .npz, image folder, CIFAR-10 binary, or 'demo' (the embedded test split)")
    p.add_argument("--a", type=non_negative_int, default=None, help="index of the first image")
    p.add_argument("--b", type=non_negative_int, default=None, help="index of the second image")
    p.add_argument("--steps", type=positive_int, default=8, help='images along the path, ends included')
    p.add_argument("--out", required=True, help='the picture to write (.png)')
    p.set_defaults(run=_interpolate)

    p = commands.add_parser("manipulate", help="edit images along a direction between two classes, or move them "
                                               "between classes with a class-conditional Glow")
    p.add_argument("--checkpoint", required=True, help='a Glow run folder or its checkpoint/')
    p.add_argument("--positive", default=None, help="direction edit: class name or index")
    p.add_argument("--negative", default=None, help="direction edit: class name or index")
    p.add_argument("--from", dest="source", default=None,
                   help="class transfer: the class of the images to move (class-conditional models)")
    p.add_argument("--to", default=None, help="class transfer: comma-separated target classes (default: all)")
    p.add_argument("--data", default="demo", help="labelled images the direction comes from")
    p.add_argument("--edit-data", default="demo",
                   help="images to edit (of the --negative class for a direction, of the --from class for a transfer)")
    p.add_argument("--n", type=positive_int, default=6, help='how many images to edit')
    p.add_argument("--alphas", type=_alphas, default=(-1.0, -0.5, 0.0, 0.5, 1.0), help="comma-separated strengths")
    p.add_argument("--scale", type=finite_float, default=1.0, help='multiplies the direction before the --alphas')
    p.add_argument("--out", required=True, help='the picture to write (.png)')
    p.set_defaults(run=_manipulate)

    p = commands.add_parser("demo", help="train on the embedded CIFAR-10 sample and write every artefact")
    p.add_argument("--steps", type=positive_int, default=600, help='training steps')
    p.add_argument("--out", default="out/demo", help='output folder')
    p.add_argument("--seed", type=seed, default=0, help='random seed')
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint already in --out (refused otherwise)")
    p.set_defaults(run=_demo)
