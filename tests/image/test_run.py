"""The Glow run (flowkit_image.run) and CLI end to end on real CIFAR-10 images (tiny preset)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from flowkit.cli import main
from flowkit_image import run
from flowkit_image.data import load_images


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar_train):
    root = tmp_path_factory.mktemp("glow")
    images, labels = cifar_train
    np.savez(root / "train.npz", images=images[:600].permute(0, 2, 3, 1).numpy(), labels=labels[:600].numpy(),
             classes=np.array(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                               "truck"]))
    run.train(preset="tiny", data=str(root / "train.npz"), out=root / "run", steps=30, progress=False)
    return root


def test_checkpoint_round_trip_gives_identical_bits_per_dim(trained):
    """The bits/dim measured in memory at the end of training equals the reloaded checkpoint's."""
    result = run.evaluate(trained / "run" / "checkpoint", str(trained / "train.npz"))
    assert result["n_bits"] == 8 and result["images"] == 600
    metrics = [json.loads(line) for line in (trained / "run" / "metrics.jsonl").read_text().splitlines()]
    held_out = metrics[-1]["eval_bits_per_dim"]  # computed in training on the 5% hold-out, same seed
    model = run.load(trained / "run" / "checkpoint")
    from flowkit_image.data import load_images

    assert run.bits_per_dim(model, load_images(trained / "train.npz").subset(slice(570, None))) == pytest.approx(
        held_out, abs=1e-6)


def test_resume_reproduces_an_uninterrupted_run(tmp_path, trained):
    data = str(trained / "train.npz")
    run.train(preset="tiny", data=data, out=tmp_path / "straight", steps=8, progress=False)
    run.train(preset="tiny", data=data, out=tmp_path / "split", steps=4, progress=False)
    run.train(preset="tiny", data=data, out=tmp_path / "split", steps=8, resume=True, progress=False)
    a = run.load(tmp_path / "straight" / "checkpoint").state_dict()
    b = run.load(tmp_path / "split" / "checkpoint").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5, msg=name)


def test_refuses_to_overwrite_a_run(trained):
    with pytest.raises(Exception, match="already holds a checkpoint"):
        run.train(preset="tiny", data=str(trained / "train.npz"), out=trained / "run", steps=1, progress=False)


def test_cli_evaluate_sample_reconstruct_interpolate_manipulate(trained, capsys):
    ckpt, data = str(trained / "run" / "checkpoint"), str(trained / "train.npz")
    assert main(["image", "evaluate", "--checkpoint", ckpt, "--data", data, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"bits_per_dim", "n_bits", "images"} <= set(result) and 2 < result["bits_per_dim"] < 9
    assert main(["image", "sample", "--checkpoint", ckpt, "--temperature", "0.7", "--n", "9",
                 "--out", str(trained / "s.png")]) == 0
    assert Image.open(trained / "s.png").size == (2 * (3 * 34 + 2),) * 2
    assert main(["image", "reconstruct", "--checkpoint", ckpt, "--data", data, "--n", "8"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["max_abs_error"] < 1e-4
    assert main(["image", "interpolate", "--checkpoint", ckpt, "--data", data, "--a", "0", "--b", "1",
                 "--out", str(trained / "i.png")]) == 0
    assert main(["image", "manipulate", "--checkpoint", ckpt, "--data", data, "--edit-data", data,
                 "--positive", "ship", "--negative", "horse", "--out", str(trained / "m.png")]) == 0
    assert (trained / "i.png").exists() and (trained / "m.png").exists()


def test_ship_direction_makes_held_out_horses_bluer(trained, cifar_val):
    """Attribute editing on real data: the ship-minus-horse direction adds blue, by an independent measure."""
    data = str(trained / "train.npz")
    np.savez(trained / "val.npz", images=cifar_val[0].permute(0, 2, 3, 1).numpy(), labels=cifar_val[1].numpy())
    result = run.manipulate(trained / "run" / "checkpoint", trained / "m2.png", positive="8", negative="7",
                                  data=data, edit_data=str(trained / "val.npz"), n=50, alphas=(-1.0, 0.0, 1.0))
    change = result["mean_abs_pixel_change"]
    assert change["+0.00"] == 0 and change["+1.00"] > 5
    model = run.load(trained / "run" / "checkpoint")
    import flowkit
    from flowkit_image.data import load_images

    source, targets = load_images(data), load_images(str(trained / "val.npz"))
    g = torch.Generator().manual_seed(0)
    d = flowkit.attribute_direction(model, model.preprocess(source.of_class(8).images, g),
                                    model.preprocess(source.of_class(7).images, g))
    horses = model.preprocess(targets.of_class(7).images, noise=False)
    edited = model.postprocess(flowkit.apply_direction(model, horses, d, [-1.0, 0.0, 1.0])).float()
    blueness = (edited[:, :, 2] - edited[:, :, 0]).mean((1, 2, 3))  # blue minus red, per alpha
    assert blueness[0] < blueness[1] < blueness[2]


def test_cli_errors_are_one_readable_line(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.full((4, 32, 32, 3), 999))
    for args in (["image", "train", "--data", str(bad), "--out", str(tmp_path / "o")],
                 ["image", "evaluate", "--checkpoint", str(tmp_path / "none")],
                 ["image", "train", "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o")]):
        done = subprocess.run([sys.executable, "-m", "flowkit.cli", *args], capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("flowkit: error:") and "Traceback" not in done.stderr


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "flowkit.cli", "--version"], capture_output=True, text=True).stdout
    assert out.startswith("flowkit 0.1.0")
    help_text = subprocess.run([sys.executable, "-m", "flowkit.cli", "--help"], capture_output=True, text=True).stdout
    assert "image" in help_text


def test_class_conditional_glow_with_auxiliary_classifier(tmp_path, trained):
    run.train(preset="tiny", data=str(trained / "train.npz"), out=tmp_path / "y", steps=6,
                              class_conditional=True, weight_y=0.01, progress=False)
    model = run.load(tmp_path / "y" / "checkpoint")
    assert model.config.n_classes == 10 and model.classifier is not None
    # the reported metrics are the auxiliary classifier's, computed apart on a labelled batch
    labels = torch.arange(8) % 10
    x = model.preprocess(load_images(trained / "train.npz").images[:8], torch.Generator().manual_seed(0))
    loss, reported = run._loss_fn(model)(model.train(), (x, labels))
    logits = model.class_logits()
    assert reported["accuracy"] == pytest.approx(float((logits.argmax(1) == labels).float().mean()))
    assert reported["bits_y"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)) / math.log(2))
    model.eval()
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    x = model.preprocess(images, torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = model.log_prob(x, model.context(torch.tensor([0, 0, 0, 0])))
        b = model.log_prob(x, model.context(torch.tensor([5, 5, 5, 5])))
        assert model.class_logits().shape == (4, 10)
    assert not torch.allclose(a, b)  # the prior depends on the class
    assert run.sample(model, tmp_path / "y.png", n=10, label=3).exists()



def test_class_transfer_moves_images_between_classes_and_back(tmp_path, trained, capsys):
    run.train(preset="tiny", data=str(trained / "train.npz"), out=tmp_path / "c", steps=20, class_conditional=True,
              progress=False)
    args = ["image", "manipulate", "--checkpoint", str(tmp_path / "c"), "--out", str(tmp_path / "t.png"),
            "--edit-data", str(trained / "train.npz"), "--from", "ship", "--to", "ship,horse,7", "--n", "3"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["targets"] == ["ship", "horse", "horse"] and result["images"] == 3
    assert result["round_trip_max_abs_error"] < 1e-4 and result["decoded"]["ship"] == 3  # an exact round trip
    assert result["mean_abs_pixel_change"]["ship"] == 0.0  # and no pixel moves at the bin centres
    assert result["mean_abs_pixel_change"]["horse"] > 0  # another class decodes the same latent elsewhere
    assert Image.open(tmp_path / "t.png").size[0] > Image.open(tmp_path / "t.png").size[1]  # 3 rows, 4 columns
    unconditional = ["image", "manipulate", "--checkpoint", str(trained / "run"), "--out", str(tmp_path / "u.png"),
                     "--from", "ship"]
    assert main(unconditional) == 2
    assert "needs a class-conditional Glow" in capsys.readouterr().err
    assert main(args[:6] + ["--from", "ship", "--positive", "ship"]) == 2
    assert "give --positive and --negative" in capsys.readouterr().err

def test_reversible_training_from_the_cli(tmp_path, trained, capsys):
    out = tmp_path / "rev"
    assert main(["image", "train", "--preset", "tiny", "--data", str(trained / "train.npz"), "--steps", "3",
                 "--memory", "reversible", "--optimizer-in-backward", "--lr", "4e-3", "--warmup-steps", "2",
                 "--out", str(out)]) == 0
    saved = json.loads((out / "checkpoint" / "config.json").read_text())
    assert saved["train"]["memory"] == "reversible" and saved["step"] == 3
    assert (saved["train"]["lr"], saved["train"]["warmup_steps"]) == (4e-3, 2)  # the preset says 1e-3 and 5
    assert saved["train"]["optimizer_in_backward"]
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["step"] == 3


def test_cli_trains_other_sizes_and_architectures_from_an_image_folder(tmp_path, cifar_train):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(40):  # 64x64 real images: 2x2 mosaics of CIFAR-10 images
        tiles = cifar_train[0][4 * i:4 * i + 4].permute(0, 2, 3, 1).numpy()
        mosaic = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)
        Image.fromarray(mosaic).save(folder / f"{i}.png")
    out = tmp_path / "run"
    assert main(["image", "train", "--preset", "tiny", "--data", str(folder), "--steps", "2", "--batch-size", "8",
                 "--n-bits", "5", "--coupling", "additive", "--permutation", "shuffle", "--levels", "3",
                 "--out", str(out)]) == 0
    model = run.load(out / "checkpoint")
    assert model.config.image_shape == (3, 64, 64) and model.config.n_bits == 5 and model.config.levels == 3
    assert model.config.coupling == "additive" and model.config.permutation == "shuffle"
    assert main(["image", "train", "--resume", "--depth", "4", "--data", str(folder), "--out", str(out)]) == 2


def test_demo_never_deletes_an_existing_run(trained):
    before = (trained / "run" / "checkpoint" / "model.safetensors").read_bytes()
    done = subprocess.run([sys.executable, "-m", "flowkit.cli", "image", "demo", "--steps", "1", "--out",
                           str(trained / "run")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "already holds a checkpoint" in done.stderr
    assert (trained / "run" / "checkpoint" / "model.safetensors").read_bytes() == before


def test_bad_eval_data_is_refused_before_the_first_step(tmp_path, trained):
    np.savez(tmp_path / "small.npz", images=np.zeros((8, 16, 16, 3), np.uint8))
    with pytest.raises(Exception, match=r"held-out images are \(3, 16, 16\), the model expects \(3, 32, 32\)"):
        run.train(preset="tiny", data=str(trained / "train.npz"), eval_data=str(tmp_path / "small.npz"),
                        out=tmp_path / "run", steps=3, progress=False)
    assert not (tmp_path / "run" / "checkpoint").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_cli_training_stopped_by_sigint_saves_and_resumes_exactly(tmp_path, trained):
    """A real `flowkit image train` process, interrupted mid-run, then resumed from the CLI."""
    import signal
    import time

    data, env = str(trained / "train.npz"), {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "flowkit.cli", "image", "train", "--preset", "tiny", "--data", data,
               "--steps", "400", "--checkpoint-every", "1000"]
    straight = subprocess.run([*command, "--out", str(tmp_path / "straight")], env=env, capture_output=True,
                              timeout=300)
    assert straight.returncode == 0, straight.stderr
    child = subprocess.Popen([*command, "--out", str(tmp_path / "cut")], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.05)  # in the loop once the first records are logged
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("flowkit: stopped by SIGINT after step ") and "--resume" in line
    assert "Traceback" not in stderr
    step = int(line.split("after step ")[1].split(";")[0])
    assert 10 <= step < 400
    done = subprocess.run([*command, "--out", str(tmp_path / "cut"), "--resume"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    a = run.load(tmp_path / "straight").state_dict()
    b = run.load(tmp_path / "cut").state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=1e-6, msg=name)


def test_a_resumed_run_keeps_its_preset_and_class_conditioning_needs_two_classes(tmp_path, trained):
    data = str(trained / "train.npz")
    with pytest.raises(Exception, match="trained with preset 'tiny'.*drop --preset cpu"):
        run.train(preset="cpu", data=data, out=trained / "run", steps=40, resume=True, progress=False)
    one_class = tmp_path / "one.npz"
    np.savez(one_class, images=np.zeros((40, 32, 32, 3), np.uint8), labels=np.zeros(40, np.int64))
    with pytest.raises(Exception, match="at least 2 classes"):
        run.train(preset="tiny", data=str(one_class), out=tmp_path / "c", steps=1, class_conditional=True,
                        progress=False)


def test_resume_reuses_the_saved_seed_data_and_flips_and_reports_what_changed(tmp_path, trained, capsys):
    """Issue 30, item 6: without --seed and --data a resumed run used seed 0 and the demo
    set, and it kept the first run's --minutes (``--resume --steps 60`` stopped at once)."""
    data = str(trained / "train.npz")
    straight = ["image", "train", "--preset", "tiny", "--data", data, "--seed", "7", "--hflip"]
    assert main([*straight, "--out", str(tmp_path / "straight"), "--steps", "6"]) == 0
    assert main([*straight, "--out", str(tmp_path / "split"), "--steps", "6", "--minutes", "0.0001"]) == 0
    stopped = json.loads(capsys.readouterr().out.splitlines()[-1])["step"]
    assert stopped < 6  # the time budget ended the first part
    assert main(["image", "train", "--out", str(tmp_path / "split"), "--resume"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.splitlines()[-1])["step"] == 6  # the budget was not carried over
    assert f"resumed at step {stopped} with the saved seed 7, data {data} and hflip True" in captured.err
    a = run.load(tmp_path / "straight").state_dict()
    b = run.load(tmp_path / "split").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5, msg=name)
    assert main(["image", "train", "--out", str(tmp_path / "split"), "--resume", "--steps", "7", "--seed", "8"]) == 0
    assert "changed: steps 6 -> 7, seed 7 -> 8" in capsys.readouterr().err


def test_a_sibling_of_another_run_is_never_read_in_place_of_a_checkpoint_nor_deleted(tmp_path, trained, capsys):
    """Issue 30, item 7: ``evaluate --checkpoint sib/model`` reported the unrelated
    ``sib/model.old`` because its step was higher; recovery would have deleted it."""
    from flowkit.train import recover_checkpoint

    data = str(trained / "train.npz")
    for name, steps in (("a", 2), ("b", 4)):
        run.train(preset="tiny", data=data, out=tmp_path / name, steps=steps, progress=False)
    (tmp_path / "sib").mkdir()
    (tmp_path / "a" / "checkpoint").rename(tmp_path / "sib" / "model")
    (tmp_path / "b" / "checkpoint").rename(tmp_path / "sib" / "model.old")
    results = {}
    for name in ("model", "model.old"):
        assert main(["image", "evaluate", "--checkpoint", str(tmp_path / "sib" / name), "--data", data,
                     "--json"]) == 0
        results[name] = json.loads(capsys.readouterr().out)["bits_per_dim"]
    assert results["model"] != results["model.old"]
    assert run.load(tmp_path / "sib" / "model").config == run.load(tmp_path / "sib" / "model.old").config
    assert recover_checkpoint(tmp_path / "sib" / "model") == tmp_path / "sib" / "model"
    assert (tmp_path / "sib" / "model.old" / "model.safetensors").is_file()  # another run's: kept


def test_many_samples_go_to_an_array_in_batches(tmp_path, trained, capsys):
    """Issue 30, item 13: `sample --n 10000000` tried to allocate 122 GB at once."""
    out = tmp_path / "many.npy"
    assert main(["image", "sample", "--checkpoint", str(trained / "run"), "--out", str(out), "--n", "300"]) == 0
    array = np.load(out)
    assert array.shape == (300, 32, 32, 3) and array.dtype == np.uint8
    assert len({array[i].tobytes() for i in range(300)}) == 300  # every batch draws new noise
    assert not list(tmp_path.glob(".*.tmp"))
