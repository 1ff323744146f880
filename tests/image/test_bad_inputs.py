"""The image plug-in's catalogue of bad inputs: each gets one readable line and exit 2,
never a traceback or a silent result; the file readers survive arbitrary bytes; a soak
test of encode/decode round trips of real images through a trained Glow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from flowkit.cli import main
from flowkit.errors import DataError
from flowkit_image import run
from flowkit_image.data import load_images


@pytest.fixture(scope="module")
def files(tmp_path_factory, cifar_train):
    """A trained tiny Glow and a zoo of good and bad files."""
    root = tmp_path_factory.mktemp("bad")
    images, labels = cifar_train
    np.savez(root / "good.npz", images=images[:200].permute(0, 2, 3, 1).numpy(), labels=labels[:200].numpy())
    run.train(preset="tiny", data=str(root / "good.npz"), out=root / "run", steps=3, progress=False)
    np.savez(root / "nolabels.npz", images=images[:40].permute(0, 2, 3, 1).numpy())
    np.savez(root / "noimages.npz", pixels=np.zeros((4, 32, 32, 3), np.uint8))
    np.savez(root / "float.npz", images=np.random.rand(4, 32, 32, 3))
    np.savez(root / "range.npz", images=np.full((4, 32, 32, 3), 300))
    np.savez(root / "small.npz", images=np.zeros((4, 16, 16, 3), np.uint8))
    np.savez(root / "zero.npz", images=np.zeros((0, 32, 32, 3), np.uint8))
    np.save(root / "array.npy", np.zeros((4, 32, 32, 3), np.uint8))
    (root / "array.npy").rename(root / "array.npz")  # a .npy renamed .npz
    np.savez(root / "one.npz", images=images[:1].permute(0, 2, 3, 1).numpy())
    (root / "random.npz").write_bytes(bytes(range(256)) * 8)
    (root / "empty").mkdir()
    (root / "badpng").mkdir()
    (root / "badpng" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "file").write_text("a file, not a folder")
    def glow_edit(**changes):
        return lambda c: json.dumps({**c, "model": {**c["model"], "glow": {**c["model"]["glow"], **changes}}})

    edits = [("garbage", lambda c: "{not json"), ("foreign", lambda c: json.dumps({"format": "other"})),
             ("absurd", glow_edit(width=200000)), ("nbits", glow_edit(n_bits=5)),
             ("logscale", glow_edit(actnorm_logscale_factor=0)), ("scale", glow_edit(coupling_scale="exp")),
             ("stringwidth", glow_edit(width="8")), ("noglow", lambda c: json.dumps({**c, "model": {"kind": "glow"}})),
             ("listmodel", lambda c: json.dumps({**c, "model": []})),
             ("negstep", lambda c: json.dumps({**c, "step": -5}))]
    for name, edit in edits:
        folder = root / name / "checkpoint"
        folder.mkdir(parents=True)
        for f in (root / "run" / "checkpoint").iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(edit(config))
    huge = root / "huge" / "checkpoint"  # finite weights so large that the log-likelihood overflows
    huge.mkdir(parents=True)
    for f in (root / "run" / "checkpoint").iterdir():
        if f.suffix == ".safetensors" and f.stem in ("model", "ema"):
            tensors = load_file(f)
            tensors = {k: v * 3e38 if k.endswith("conv_out.logs") else v for k, v in tensors.items()}
            save_file(tensors, huge / f.name)
        else:
            (huge / f.name).write_bytes(f.read_bytes())
    bad_ema = root / "bad_ema" / "checkpoint"  # raw weights intact, EMA file damaged
    bad_ema.mkdir(parents=True)
    for f in (root / "run" / "checkpoint").iterdir():
        data = f.read_bytes()
        (bad_ema / f.name).write_bytes(data[: len(data) // 2] if f.name == "ema.safetensors" else data)
    truncated = root / "truncated" / "checkpoint"
    truncated.mkdir(parents=True)
    for f in (root / "run" / "checkpoint").iterdir():
        data = f.read_bytes()
        (truncated / f.name).write_bytes(data[: len(data) // 2] if f.suffix == ".safetensors" else data)
    return root


CASES = [
    # evaluate: checkpoints
    ("evaluate --checkpoint {r}/missing", "no checkpoint"),
    ("evaluate --checkpoint {r}/file", "no checkpoint"),
    ("evaluate --checkpoint {r}/garbage", "corrupt checkpoint config"),
    ("evaluate --checkpoint {r}/foreign", "is not a flowkit checkpoint"),
    ("evaluate --checkpoint {r}/truncated", "corrupt checkpoint file"),
    ("evaluate --checkpoint {r}/absurd", "model.glow.width is 200000 there and was"),
    # edited configs that change the meaning of the weights (issue 30, items 10 and 14)
    ("evaluate --checkpoint {r}/nbits", "model.glow.n_bits is 5 there and was 8 when the weights were saved"),
    ("evaluate --checkpoint {r}/logscale", "model.glow.actnorm_logscale_factor is 0 there"),
    ("evaluate --checkpoint {r}/scale", "model.glow.coupling_scale is 'exp' there and was 'sigmoid'"),
    ("evaluate --checkpoint {r}/stringwidth", "model.glow.width is '8' there"),
    ("evaluate --checkpoint {r}/noglow", "model.glow is None there"),
    ("evaluate --checkpoint {r}/listmodel", "model is [] there"),
    ("evaluate --checkpoint {r}/negstep", "step -5"),
    ("train --out {r}/nbits --resume", "model.glow.n_bits is 5 there"),
    ("train --out {r}/listmodel --resume", "model is [] there"),
    ("train --out {r}/negstep --resume", "step -5"),
    ("evaluate --checkpoint {r}/huge", "non-finite log-likelihoods"),
    # evaluate: data
    ("evaluate --checkpoint {r}/run --data {r}/missing.npz", "missing.npz"),
    ("evaluate --checkpoint {r}/run --data {r}/noimages.npz", "no array named images"),
    ("evaluate --checkpoint {r}/run --data {r}/float.npz", "integer pixels"),
    ("evaluate --checkpoint {r}/run --data {r}/range.npz", "out of range 0..255"),
    ("evaluate --checkpoint {r}/run --data {r}/small.npz", "the model expects (3, 32, 32)"),
    ("evaluate --checkpoint {r}/run --data {r}/zero.npz", "zero.npz holds no images"),
    ("evaluate --checkpoint {r}/run --data {r}/array.npz", "a single .npy array, not an .npz archive"),
    ("train --data {r}/array.npz --out {r}/t4", "a single .npy array, not an .npz archive"),
    ("evaluate --checkpoint {r}/run --data {r}/random.npz", "random.npz"),
    ("evaluate --checkpoint {r}/run --data {r}/empty", "empty"),
    ("evaluate --checkpoint {r}/run --data {r}/badpng", "a.png"),
    ("evaluate --checkpoint {r}/run --batch-size 0", "--batch-size: must be at least 1"),
    ("evaluate --checkpoint {r}/run --batch-size abc", "--batch-size: expected a whole number"),
    # sample
    ("sample --checkpoint {r}/run --out {r}/s.png --n 0", "--n: must be at least 1"),
    ("sample --checkpoint {r}/run --out {r}/s.png --temperature -1", "--temperature: must be at least 0"),
    ("sample --checkpoint {r}/run --out {r}/s.png --temperature inf", "--temperature: must be a finite number"),
    ("sample --checkpoint {r}/run --out {r}/s.png --temperature nan", "--temperature: must be a finite number"),
    ("sample --checkpoint {r}/run --out {r}/empty", "is a folder"),
    ("sample --checkpoint {r}/run --out {r}/samples", "output images need an extension"),
    ("sample --checkpoint {r}/run --out {r}/file/s.png", "file"),
    ("sample --checkpoint {r}/run --out {r}/s.png --label 3", "--label needs a class-conditional model"),
    ("sample --checkpoint {r}/run", "the following arguments are required: --out"),
    ("sample --checkpoint {r}/run --out {r}/s.png --n 10000000", "write many samples to an array instead"),
    ("sample --checkpoint {r}/run --out {r}/many.npy --n 1000000000000", "GiB free"),
    # reconstruct, interpolate, manipulate
    ("reconstruct --checkpoint {r}/run --n -1", "--n: must be at least 1"),
    ("interpolate --checkpoint {r}/run --out {r}/i.png --data {r}/good.npz --a 0 --b 100000", "index out of range"),
    ("interpolate --checkpoint {r}/run --out {r}/i.png --steps 0", "--steps: must be at least 1"),
    ("interpolate --checkpoint {r}/run --out {r}/i.png --a 0", "give both --a and --b"),
    ("interpolate --checkpoint {r}/run --out {r}/i.png --a -1 --b 2", "--a: must be 0 or more"),
    ("manipulate --checkpoint {r}/run --out {r}/m.png --data {r}/good.npz --edit-data {r}/good.npz "
     "--positive nosuch --negative horse", "unknown class 'nosuch'"),
    ("manipulate --checkpoint {r}/run --out {r}/m.png --positive ship --negative horse --alphas 1,x",
     "--alphas: expected a number"),
    ("manipulate --checkpoint {r}/run --out {r}/m.png --data {r}/nolabels.npz --positive ship --negative horse",
     "no labels"),
    # train
    ("train --data {r}/missing.npz --out {r}/t1", "missing.npz"),
    ("train --data {r}/good.npz --out {r}/t1 --levels 0", "--levels: must be at least 1"),
    ("train --data {r}/good.npz --out {r}/t1 --depth -3", "--depth: must be at least 1"),
    ("train --data {r}/good.npz --out {r}/t1 --width 0", "--width: must be at least 1"),
    ("train --data {r}/good.npz --out {r}/t1 --lr 0", "--lr: must be greater than 0"),
    ("train --data {r}/good.npz --out {r}/t1 --lr nan", "--lr: must be a finite number"),
    ("train --data {r}/good.npz --out {r}/t1 --warmup-steps -1", "--warmup-steps: must be 0 or more"),
    ("train --data {r}/good.npz --out {r}/t1 --n-bits 0", "--n-bits: must be at least 1"),
    ("train --data {r}/good.npz --out {r}/t1 --batch-size 0", "--batch-size: must be at least 1"),
    ("train --data {r}/good.npz --out {r}/t1 --steps -5", "--steps: must be at least 1"),
    ("train --data {r}/good.npz --out {r}/t1 --minutes -1", "--minutes: must be greater than 0"),
    ("train --data {r}/good.npz --out {r}/t1 --checkpoint-every 0", "--checkpoint-every: must be at least 1"),
    ("train --data {r}/good.npz --out {r}/t1 --seed " + str(2**63), "--seed: must be at most 2**63 - 1"),
    ("train --data {r}/good.npz --out {r}/t1 --seed -2", "--seed: must be 0 or more"),
    ("sample --checkpoint {r}/run --out {r}/s.png --seed 1e3", "--seed: expected a whole number"),
    ("train --data {r}/good.npz --out {r}/t1 --memory bogus", "--memory: invalid choice"),
    ("train --data {r}/good.npz --out {r}/t1 --bogus", "flowkit: error: unrecognized arguments: --bogus"),
    ("train --data {r}/good.npz --eval-data {r}/zero.npz --out {r}/t1", "zero.npz holds no images"),
    ("train --data {r}/good.npz --out {r}/t1 --preset bogus", "--preset: invalid choice"),
    ("train --data {r}/good.npz --out {r}/file/run", "cannot write to the output folder"),
    ("train --data {r}/good.npz --out {r}/run --steps 4", "already holds a checkpoint"),
    ("train --data {r}/good.npz --out {r}/run --resume --depth 4", "keeps its architecture"),
    ("train --data {r}/good.npz --out {r}/run --resume --preset cpu", "trained with preset 'tiny'"),
    ("train --data {r}/good.npz --eval-data {r}/small.npz --out {r}/t2", "held-out images are (3, 16, 16)"),
    ("train --data {r}/nolabels.npz --class-conditional --out {r}/t3", "at least 2 classes"),
    ("train --data {r}/good.npz --batch-size 500 --out {r}/t4 --steps 1", "batch size 500 is larger"),
    ("demo --out {r}/run --steps 1", "already holds a checkpoint; pass --overwrite to replace it"),
    ("", "the following arguments are required: COMMAND"),
]


@pytest.mark.parametrize("command, message", CASES, ids=[c for c, _ in CASES])
def test_bad_input_is_one_line_and_exit_2(files, capsys, command, message):
    code = main(["image", *command.format(r=files).split()])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("flowkit: error:") and message in err[0], err
    assert "error: flowkit:" not in err[0]  # one prefix
    assert not (files / "t1").exists() or not any((files / "t1").glob("checkpoint*"))


def test_an_error_during_training_starts_its_own_line_after_the_progress_bar(files, capsys):
    code = main(["image", "train", "--preset", "tiny", "--data", str(files / "good.npz"), "--steps", "40",
                 "--lr", "1e6", "--out", str(files / "diverges")])  # the progress bar is on, as for a user
    err = capsys.readouterr().err
    assert code == 2 and "train:" in err  # the bar was drawn
    assert "\nflowkit: error: non-finite loss at step" in err, err[-300:]


def test_no_ema_reads_the_raw_weights_only(files, capsys):
    assert (files / "bad_ema" / "checkpoint" / "ema.safetensors").exists()
    assert main(["image", "evaluate", "--checkpoint", str(files / "bad_ema")]) == 2
    assert "ema.safetensors" in capsys.readouterr().err
    assert main(["image", "evaluate", "--checkpoint", str(files / "bad_ema"), "--no-ema"]) == 0  # never read
    capsys.readouterr()


def test_reconstruct_reports_the_images_it_used(files, capsys):
    assert main(["image", "reconstruct", "--checkpoint", str(files / "run"), "--data", str(files / "one.npz"),
                 "--n", "16"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2048), st.sampled_from([".npz", ".png", ".bin"]))
def test_image_readers_survive_arbitrary_bytes(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"x{suffix}"
    path.write_bytes(data)
    try:
        load_images(str(path) if suffix != ".png" else str(path.parent))
    except DataError:
        pass  # the only acceptable failure: a clear DataError naming the file


def test_soak_thousands_of_round_trips_of_real_images(files, cifar_val):
    """2,000 encode/decode round trips through a trained Glow, extremes included: no
    non-finite value, bounded error, every pixel recovered."""
    model = run.load(files / "run")
    images = torch.cat([cifar_val[0], cifar_val[0].flip(0), torch.zeros(8, 3, 32, 32, dtype=torch.uint8),
                        torch.full((8, 3, 32, 32), 255, dtype=torch.uint8)])[:2000]
    worst = 0.0
    with torch.no_grad():
        for start in range(0, len(images), 250):
            x = model.preprocess(images[start:start + 250], noise=False) + 0.5 / model.n_bins
            z = model.encode(x)
            assert torch.isfinite(z).all()
            back = model.decode(z)
            worst = max(worst, float((back - x).abs().max()))
            assert torch.equal(model.postprocess(back), images[start:start + 250])
    assert len(images) == 2000 and worst < 1e-4


TOKENS = ["--n", "--temperature", "--seed", "--label", "--out", "-1", "0", "nan", "1e309", "abc", "3", "x.png", "--"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(TOKENS), max_size=8))
def test_cli_argument_fuzz_never_escapes_as_a_traceback(capsys, tokens):
    code = main(["image", "sample", "--checkpoint", "/nonexistent/run", *tokens])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("flowkit: error:"), (tokens, err)


def test_a_decompression_bomb_is_refused(tmp_path, monkeypatch):
    from PIL import Image

    folder = tmp_path / "bomb"
    folder.mkdir()
    Image.new("RGB", (64, 64)).save(folder / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4,096 pixels is then more than twice the limit
    with pytest.raises(DataError, match="decompression bomb"):
        load_images(str(folder))


def test_a_full_disk_during_training_is_one_line_and_keeps_the_previous_checkpoint(files, tmp_path):
    """Issue 30, item 11: the checkpoint save ended as an internal SafetensorError (exit 1)."""
    from tests.conftest import run_cli_with_file_size_limit

    train = ["image", "train", "--preset", "tiny", "--data", files / "good.npz", "--out", tmp_path / "run"]
    done = run_cli_with_file_size_limit([*train, "--steps", "2"], limit=20_000)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("flowkit: error: could not write the checkpoint") and "no checkpoint was written" in last
    assert main([*map(str, train), "--steps", "1"]) == 0  # a run folder with no checkpoint starts afresh
    done = run_cli_with_file_size_limit([*train, "--resume", "--steps", "3"], limit=20_000)
    assert done.returncode == 2, done.stderr
    assert "the previous checkpoint is kept" in done.stderr.strip().splitlines()[-1]
    assert run.load(tmp_path / "run") is not None
    assert json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())["step"] == 1
    assert not (tmp_path / "run" / "checkpoint.tmp").exists()
