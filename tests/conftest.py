"""Shared fixtures: the real data in ../shared/data (skipped only when absent, never in CI)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

# CI draws the same examples every run; locally hypothesis explores new ones each time.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FLOWKIT_DATA", ROOT.parent / "shared" / "data"))


def require_data(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"real data missing in CI: {path}")
        pytest.skip(f"real data not present: {path}")
    return path


@pytest.fixture(scope="session")
def cifar_train() -> tuple[torch.Tensor, torch.Tensor]:
    """The first 2,000 CIFAR-10 training images, uint8 (N, 3, 32, 32), and labels."""
    with np.load(require_data("cifar10", "train_10k.npz")) as data:
        images = torch.from_numpy(data["images"][:2000]).permute(0, 3, 1, 2).contiguous()
        return images, torch.from_numpy(data["labels"][:2000].astype(np.int64))


@pytest.fixture(scope="session")
def cifar_val() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,000 held-out CIFAR-10 images (disjoint from train_10k)."""
    with np.load(require_data("cifar10", "val_1k.npz")) as data:
        images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).contiguous()
        return images, torch.from_numpy(data["labels"].astype(np.int64))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


AUDIO_TRAIN_SPEAKERS = {"george", "jackson", "lucas", "nicolas"}
AUDIO_HELD_OUT = "theo"


@pytest.fixture(scope="session")
def fsdd_folder() -> Path:
    """Free Spoken Digit Dataset recordings (8 kHz); speaker theo is the held-out one."""
    return require_data("fsdd")


@pytest.fixture(scope="session")
def fsdd_train(fsdd_folder):
    """Every 4th recording of the four training speakers (500 clips)."""
    from flowkit_audio.data import fsdd_clips

    return fsdd_clips(fsdd_folder, speakers=AUDIO_TRAIN_SPEAKERS)[::4]


@pytest.fixture(scope="session")
def fsdd_held_out(fsdd_folder):
    """Twenty recordings of the held-out speaker, two of every digit."""
    from flowkit_audio.data import fsdd_clips

    return fsdd_clips(fsdd_folder, speakers={AUDIO_HELD_OUT})[::25]


@pytest.fixture(scope="session")
def fsdd_subset(tmp_path_factory, fsdd_folder) -> Path:
    """A folder of 300 recordings (all five speakers, takes 5-10 of every digit), for the CLI."""
    import shutil

    folder = tmp_path_factory.mktemp("fsdd")
    for path in sorted(fsdd_folder.glob("*.wav")):
        if int(path.stem.split("_")[2]) in range(5, 11):
            shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="session", autouse=True)
def _embedding_cache(tmp_path_factory):
    """Sentence embeddings cached in one folder for the whole session (never the user's own cache)."""
    os.environ["FLOWKIT_CACHE"] = str(tmp_path_factory.mktemp("flowkit-cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def text_encoder():
    """The real default encoder (offline all-MiniLM-L6-v2), embeddings cached for the session."""
    from flowkit_text.encoder import SentenceEncoder

    return SentenceEncoder(progress=False)


@pytest.fixture(scope="session")
def rt_polarity() -> tuple[list[str], list[str]]:
    """The first 1,000 positive and 1,000 negative rt-polarity sentences."""
    from flowkit_text.data import read_sentences

    folder = require_data("rt-polarity")
    return read_sentences(folder / "pos.txt")[:1000], read_sentences(folder / "neg.txt")[:1000]


@pytest.fixture(scope="session")
def sts_dev():
    """STS Benchmark dev pairs (all 1,500)."""
    from flowkit_text.data import read_pairs

    return read_pairs(require_data("sts", "sts-dev.csv"))


@pytest.fixture(scope="session")
def text_data() -> Path:
    """The folder holding rt-polarity/ and sts/."""
    require_data("rt-polarity")
    return require_data("sts").parent


TEXT_FIT_STEPS = 300


@pytest.fixture(scope="session")
def text_files(text_data) -> dict[str, Path]:
    """The rt-polarity sentence files (4,265 each) and the STS-B dev file."""
    return {"pos": text_data / "rt-polarity" / "pos.txt", "neg": text_data / "rt-polarity" / "neg.txt",
            "sts": text_data / "sts" / "sts-dev.csv"}


@pytest.fixture(scope="session")
def text_run(tmp_path_factory, text_files) -> tuple[Path, dict]:
    """A run of the default preset fitted on the 8,530 review sentences and the STS-B dev
    sentences (unlabelled, as BERT-flow fits its target corpus), and its report."""
    from flowkit_text.run import train

    out = tmp_path_factory.mktemp("text-run")
    report = train([str(text_files["pos"]), str(text_files["neg"]), str(text_files["sts"])], out,
                      "affine", steps=TEXT_FIT_STEPS, progress=False)
    return out, report


def run_cli_with_file_size_limit(args: list[str], limit: int, timeout: float = 300):
    """``flowkit ARGS`` in a child process that cannot write a file larger than ``limit``
    bytes (``RLIMIT_FSIZE``; writes past it fail as on a full disk), one thread."""
    import resource
    import signal
    import subprocess
    import sys

    def limit_writes():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "flowkit.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"},
                          preexec_fn=limit_writes, timeout=timeout)
