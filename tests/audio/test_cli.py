"""Every `flowkit audio` command end to end on real FSDD speech, and their one-line errors."""

import json
import os
import signal
import subprocess
import sys

import pytest

from flowkit.cli import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fsdd_subset):
    root = tmp_path_factory.mktemp("audio-cli")
    assert main(["audio", "train-vocoder", "--data", str(fsdd_subset), "--out", str(root / "vocoder"),
                 "--steps", "4"]) == 0
    assert main(["audio", "train-pitch", "--data", str(fsdd_subset), "--out", str(root / "pitch"),
                 "--steps", "60"]) == 0
    return root


def test_train_commands_write_runs_that_resume(runs, fsdd_subset, capsys):
    saved = json.loads((runs / "vocoder" / "checkpoint" / "config.json").read_text())
    assert saved["step"] == 4 and saved["model"]["kind"] == "waveglow" and saved["model"]["preset"] == "cpu"
    assert main(["audio", "train-vocoder", "--data", str(fsdd_subset), "--out", str(runs / "vocoder"),
                 "--steps", "6", "--resume"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["step"] == 6
    assert (runs / "pitch" / "pitch.json").exists()


def test_vocode_writes_wavs_pictures_and_json(runs, fsdd_folder, tmp_path, capsys):
    clips = tmp_path / "in"
    clips.mkdir()
    for name in ("3_theo_11.wav", "7_theo_12.wav"):
        (clips / name).write_bytes((fsdd_folder / name).read_bytes())
    assert main(["audio", "vocode", "--checkpoint", str(runs / "vocoder" / "checkpoint"), "--input", str(clips),
                 "--out", str(tmp_path / "out"), "--sigma", "0.6", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [f["file"] for f in result["files"]] == ["3_theo_11", "7_theo_12"]
    assert result["mean"]["log_spectral_distance_db"] > 0 and result["mean"]["real_time_factor"] > 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "3_theo_11.png", "3_theo_11.wav", "7_theo_12.png", "7_theo_12.wav", "vocode.json"]


@pytest.mark.parametrize("amount", [["--semitones", "2"], ["--alpha", "-3"]])
def test_edit_pitch_with_griffin_lim_and_with_the_vocoder(runs, fsdd_folder, tmp_path, capsys, amount):
    wav = tmp_path / "5_theo_12.wav"
    wav.write_bytes((fsdd_folder / "5_theo_12.wav").read_bytes())
    for vocoder in ("griffinlim", str(runs / "vocoder")):
        out = tmp_path / ("gl" if vocoder == "griffinlim" else "wg")
        assert main(["audio", "edit-pitch", "--checkpoint", str(runs / "pitch"), "--input", str(wav),
                     "--out", str(out), *amount, "--vocoder", vocoder, "--json"]) == 0
        result = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert result["synthesis"] == ("griffin-lim" if vocoder == "griffinlim" else "vocoder")
        row = result["files"][0]
        assert row["file"] == "5_theo_12" and row["f0_in_hz"] > 60 and "semitones_vs_input" in row
        assert (out / "5_theo_12.wav").exists() and (out / "5_theo_12.png").exists()
    if amount[0] == "--alpha":
        assert result["alpha"] == -3


@pytest.mark.parametrize("args, message", [
    (["vocode", "--checkpoint", "{runs}/nothing", "--input", "{wav}", "--out", "{tmp}/o"], "no checkpoint"),
    (["vocode", "--checkpoint", "{runs}/pitch", "--input", "{wav}", "--out", "{tmp}/o"], "not a vocoder checkpoint"),
    (["vocode", "--checkpoint", "{runs}/vocoder", "--input", "{bad}", "--out", "{tmp}/o"], "not a readable audio file"),
    (["vocode", "--checkpoint", "{runs}/vocoder", "--input", "{wav}", "--out", "{wav}"], "--out must be a folder"),
    (["vocode", "--checkpoint", "{runs}/vocoder", "--input", "{wav}", "--out", "{tmp}/o", "--sigma", "nan"],
     "--sigma: must be a finite number"),
    (["edit-pitch", "--checkpoint", "{runs}/pitch", "--input", "{wav}", "--out", "{tmp}/o", "--semitones", "inf"],
     "--semitones: must be a finite number"),
    (["edit-pitch", "--checkpoint", "{runs}/pitch", "--input", "{wav}", "--out", "{tmp}/o", "--semitones", "30"],
     "calibrated pitch range"),
    (["edit-pitch", "--checkpoint", "{runs}/pitch", "--input", "{wav}", "--out", "{tmp}/o"],
     "one of the arguments --semitones --alpha is required"),
    (["edit-pitch", "--checkpoint", "{runs}/vocoder", "--input", "{wav}", "--out", "{tmp}/o", "--alpha", "1"],
     "not a pitch-flow checkpoint"),
    (["train-vocoder", "--out", "{runs}/vocoder", "--steps", "1"], "already holds a checkpoint"),
    (["train-vocoder", "--out", "{tmp}/v", "--steps", "0"], "--steps: must be at least 1"),
    (["train-vocoder", "--out", "{tmp}/v", "--preset", "huge"], "--preset: invalid choice"),
    (["train-pitch", "--out", "{tmp}/p", "--data", "{tmp}/empty"], "no audio files"),
    # issue 30, items 8, 14 and 16: no silent clipping of unscaled floats, no internal error on tiny clips
    (["vocode", "--checkpoint", "{runs}/vocoder", "--input", "{loud}", "--out", "{tmp}/o"],
     "samples reach 3, beyond the [-1, 1] of float audio"),
    (["edit-pitch", "--checkpoint", "{runs}/pitch", "--input", "{pcm}", "--out", "{tmp}/o", "--alpha", "1"],
     "unscaled PCM stored as float"),
    (["vocode", "--checkpoint", "{runs}/vocoder", "--input", "{ten}", "--out", "{tmp}/o"], "10 samples"),
    (["edit-pitch", "--checkpoint", "{runs}/pitch", "--input", "{one}", "--out", "{tmp}/o", "--semitones", "1"],
     "1 samples (0.0001 s) is too short"),
    (["train-pitch", "--out", "{tmp}/p", "--data", "{tiny}", "--steps", "1"], "is too short"),
    (["train-pitch", "--out", "{tmp}/p", "--preset", "notes", "--data", "{tiny}", "--steps", "1"], "is too short"),
    (["vocode", "--checkpoint", "{runs}/vocoder", "--input", "{wav}", "--out", "{tmp}/o", "--sigma", "1e30"],
     "--sigma: must be at most 4"),
    (["train-vocoder", "--out", "{tmp}/v", "--steps", "1" + "0" * 300], "got a number of 301 digits"),
])
def test_errors_are_one_line_and_exit_2(runs, fsdd_folder, tmp_path, args, message):
    import numpy as np
    import soundfile

    wav = tmp_path / "1_theo_11.wav"
    wav.write_bytes((fsdd_folder / "1_theo_11.wav").read_bytes())
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    (tmp_path / "empty").mkdir()
    speech, rate = soundfile.read(wav, dtype="float32")
    soundfile.write(tmp_path / "loud.wav", speech / np.abs(speech).max() * 3.0, rate, subtype="FLOAT")
    soundfile.write(tmp_path / "pcm.wav", speech * 32768, rate, subtype="FLOAT")
    soundfile.write(tmp_path / "ten.wav", speech[:10], rate)
    soundfile.write(tmp_path / "one.wav", speech[:1], rate, subtype="FLOAT")
    (tmp_path / "tiny").mkdir()
    soundfile.write(tmp_path / "tiny" / "1_theo_1.wav", speech[:10], rate)
    values = {"runs": runs, "wav": wav, "bad": tmp_path / "bad.wav", "tmp": tmp_path, "loud": tmp_path / "loud.wav",
              "pcm": tmp_path / "pcm.wav", "ten": tmp_path / "ten.wav", "one": tmp_path / "one.wav",
              "tiny": tmp_path / "tiny"}
    done = subprocess.run([sys.executable, "-m", "flowkit.cli", "audio", *(a.format(**values) for a in args)],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowkit: error:") and message in lines[0], done.stderr


@pytest.mark.bf16
def test_without_bfloat16_vocode_notes_the_fallback_in_one_line_and_errors_stay_one_line(runs, fsdd_folder, tmp_path):
    """As on an AVX2-only CPU (FLOWKIT_BF16=0): the float32 fallback of fast synthesis is one
    note after a good run, and never a second line beside an error."""
    wav = tmp_path / "in" / "1_theo_11.wav"
    wav.parent.mkdir()
    wav.write_bytes((fsdd_folder / "1_theo_11.wav").read_bytes())
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    env = {**ENV, "FLOWKIT_BF16": "0"}
    vocode = [sys.executable, "-m", "flowkit.cli", "audio", "vocode", "--checkpoint", str(runs / "vocoder")]
    good = subprocess.run([*vocode, "--input", str(wav.parent), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert good.returncode == 0, good.stderr
    notes = [line for line in good.stderr.splitlines() if line.startswith("flowkit:")]
    assert notes == ["flowkit: note: cpu lacks native bfloat16; synthesis runs in float32"]
    for args, message in ([["--input", str(tmp_path / "bad.wav"), "--out", str(tmp_path / "o2")], "not a readable"],
                          [["--input", str(wav), "--out", str(wav)], "--out must be a folder"]):
        bad = subprocess.run([*vocode, *args], capture_output=True, text=True, env=env, timeout=300)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and len(lines) == 1 and message in lines[0], bad.stderr


@pytest.mark.parametrize("command", [["vocode"], ["edit-pitch", "--semitones", "2"]])
def test_outputs_never_replace_the_inputs(runs, fsdd_folder, tmp_path, command):
    """An output folder that is, contains or would overwrite the inputs is refused before any
    work, and the user's recordings are left byte for byte (both once replaced them, exit 0)."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("3_theo_11.wav", "7_theo_12.wav"):
        (clips / name).write_bytes((fsdd_folder / name).read_bytes())
    before = {p.name: p.read_bytes() for p in clips.iterdir()}
    checkpoint = runs / ("vocoder" if command[0] == "vocode" else "pitch")
    for out, message in ((clips, "holds the input"), (tmp_path, "holds the input")):
        done = subprocess.run([sys.executable, "-m", "flowkit.cli", "audio", command[0], "--checkpoint",
                               str(checkpoint),
                               "--input", str(clips), "--out", str(out), *command[1:]],
                              capture_output=True, text=True, env=ENV, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr
    assert {p.name: p.read_bytes() for p in clips.iterdir()} == before


def test_two_inputs_with_one_output_name_are_refused(tmp_path, fsdd_folder):
    from flowkit.errors import FlowkitError
    from flowkit_audio.data import check_output_folder

    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "a.wav").write_bytes((fsdd_folder / "3_theo_11.wav").read_bytes())
    (clips / "a.flac").write_bytes(b"")
    with pytest.raises(FlowkitError, match="a.flac and a.wav would both be written as a.wav"):
        check_output_folder(clips, tmp_path / "out")
    check_output_folder(clips / "a.wav", tmp_path / "out")  # one input, another folder: fine


def test_a_missing_audio_extra_is_named_and_other_plugins_still_work():
    probe = "import sys; sys.modules['torchaudio'] = None; from flowkit.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", probe, "audio", "vocode", "--checkpoint", "x", "--input", "y",
                           "--out", "z"], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == (
        "flowkit: error: the audio commands need torchaudio: pip install 'flowkit[audio]'")
    help_text = subprocess.run([sys.executable, "-c", probe, "--help"], capture_output=True, text=True, env=ENV,
                               timeout=120).stdout
    assert "image" in help_text and "audio" in help_text


def test_a_broken_plugin_is_one_warning_line_and_the_others_work(tmp_path):
    probe = ("import sys, flowkit.cli as cli; from importlib.metadata import EntryPoint\n"
             "real = cli.entry_points\n"
             "def patched(group):\n"
             "    return [*real(group=group), EntryPoint('broken', 'no_such_module:register', group)]\n"
             "cli.entry_points = patched\n"
             "sys.exit(cli.main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", probe, "--help"], capture_output=True, text=True, env=ENV,
                          timeout=120)
    assert done.returncode == 0 and "image" in done.stdout and "audio" in done.stdout
    assert done.stderr.strip().startswith("flowkit: warning: plug-in 'broken' could not be loaded")


def test_a_pitch_run_stopped_during_calibration_says_so_is_refused_for_edits_and_resume_finishes_it(
        tmp_path, fsdd_subset, capsys):
    """Issue 30, items 4 and 17: a run stopped by SIGTERM during calibration used to exit
    143 with no message and leave a checkpoint whose direction and curve were zeros, which
    edit-pitch then used as if calibrated (unedited audio, exit 0)."""
    data = tmp_path / "data"
    data.mkdir()
    for path in sorted(fsdd_subset.glob("*.wav")):
        if int(path.stem.split("_")[2]) in (5, 6):
            (data / path.name).write_bytes(path.read_bytes())
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "flowkit.cli", "audio", "train-pitch", "--data", str(data),
                                "--out", str(run), "--steps", "2"], env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    seen = b""
    while b"calibrate" not in seen:  # the calibration shows its progress: stop the run there
        chunk = process.stderr.read1(4096)
        assert chunk, seen.decode(errors="replace")[-2000:]
        seen += chunk
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=120)
    last = (seen + rest).decode().replace("\r", "\n").strip().splitlines()[-1]
    assert process.returncode == 143
    assert last.startswith("flowkit: stopped by SIGTERM while fitting the directions and calibrating, after training "
                           "step 2;") and "holds the trained weights without it (--resume does it)" in last
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "5_theo_5.wav").write_bytes((data / "5_theo_5.wav").read_bytes())
    for amount in (["--alpha", "8"], ["--semitones", "0"]):
        assert main(["audio", "edit-pitch", "--checkpoint", str(run), "--input", str(clip), "--out",
                     str(tmp_path / "edited"), *amount]) == 2
        assert "stopped before its directions were fitted and calibrated" in capsys.readouterr().err
    assert not (tmp_path / "edited").exists()
    assert main(["audio", "train-pitch", "--out", str(run), "--resume"]) == 0  # the saved data, no training left
    captured = capsys.readouterr()
    report = json.loads(captured.out.splitlines()[-1])
    assert report["steps"] == 2 and set(report["seconds"]) == {"analysis", "training", "calibration"}
    assert "resumed at step 2 with the saved seed 0 and data" in captured.err
    assert main(["audio", "edit-pitch", "--checkpoint", str(run), "--input", str(clip), "--out",
                 str(tmp_path / "edited"), "--semitones", "0", "--json"]) == 0


def test_a_full_disk_while_writing_audio_is_one_line_and_leaves_nothing_half_written(runs, fsdd_folder, tmp_path):
    """Issue 30, item 11: vocode ended as an internal LibsndfileError."""
    from tests.conftest import run_cli_with_file_size_limit

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "3_theo_11.wav").write_bytes((fsdd_folder / "3_theo_11.wav").read_bytes())
    done = run_cli_with_file_size_limit(["audio", "vocode", "--checkpoint", runs / "vocoder", "--input",
                                         tmp_path / "in", "--out", tmp_path / "out"], limit=1024)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowkit: error: could not write") and "3_theo_11.wav" in lines[0]
    assert "nothing was left half-written" in lines[0]
    assert not [f for f in (tmp_path / "out").iterdir() if f.suffix in (".tmp", ".wav")]


def test_an_edited_or_absurd_config_is_refused_before_anything_is_allocated(runs, fsdd_folder, tmp_path, capsys):
    """Issue 30, items 10 and 13: a relabelled sample rate gave plausible numbers, and
    tampered sizes tried allocations of many GB. An edited config no longer describes its
    weights; a checkpoint saved before flowkit kept that record is held to size limits."""
    from safetensors.torch import load_file, save_file

    wav = tmp_path / "in" / "1_theo_11.wav"
    wav.parent.mkdir()
    wav.write_bytes((fsdd_folder / "1_theo_11.wav").read_bytes())

    def tampered(name, edit, keep_record=True):
        folder = tmp_path / name / "checkpoint"
        folder.mkdir(parents=True)
        for f in (runs / "vocoder" / "checkpoint").iterdir():
            if f.suffix == ".safetensors" and not keep_record:
                save_file(load_file(f), folder / f.name)  # as saved before the record existed
            else:
                (folder / f.name).write_bytes(f.read_bytes())
        config = json.loads((folder / "config.json").read_text())
        edit(config["model"]["waveglow"])
        (folder / "config.json").write_text(json.dumps(config))
        return folder.parent

    relabelled = tampered("rate", lambda c: c["mel"].update(sample_rate=16000))
    huge = tampered("huge", lambda c: c.update(wn_channels=4096, wn_layers=64), keep_record=False)
    deep = tampered("deep", lambda c: c.update(n_flows=100000), keep_record=False)
    for run, message in ((relabelled, "model.waveglow.mel.sample_rate is 16000 there and was 8000"),
                         (huge, "billion parameters and buffers"), (deep, "n_flows=100000 (1 to 256)")):
        for command in (["vocode", "--checkpoint", run, "--input", wav.parent, "--out", tmp_path / "out"],
                        ["train-vocoder", "--out", run, "--resume"]):
            assert main(["audio", *map(str, command)]) == 2
            assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_run_of_another_kind_is_never_resumed_or_loaded_as_this_one(runs, capsys):
    """Issue 30, item 14: `image train --resume` on a vocoder run was an internal error."""
    for command, message in ((["image", "train", "--out", runs / "vocoder", "--resume"], "holds no glow run"),
                             (["text", "fit", "--out", runs / "pitch", "--resume"], "holds no text run"),
                             (["audio", "train-vocoder", "--out", runs / "pitch", "--resume"],
                              "holds no waveglow run"),
                             (["image", "evaluate", "--checkpoint", runs / "vocoder"], "is not a Glow checkpoint")):
        assert main(list(map(str, command))) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[-1].startswith("flowkit: error:") and message in lines[-1], lines
