"""Build flowkit_audio/assets/fsdd_demo.npz: a small attributed sample of the Free Spoken
Digit Dataset (CC BY-SA 4.0) for `flowkit audio demo` on a machine with no data.

Train: speakers george, jackson, lucas, nicolas, recordings 5..12 of every digit (the
FSDD test split is indices 0-4); test: speaker theo, recordings 5..8 of every digit.
"""

import sys
from pathlib import Path

import numpy as np
import soundfile

SOURCE = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd")
TARGET = Path(__file__).resolve().parents[1] / "flowkit_audio" / "assets" / "fsdd_demo.npz"


def pack(speakers, indices):
    names, pieces = [], []
    for speaker in speakers:
        for digit in range(10):
            for index in indices:
                name = f"{digit}_{speaker}_{index}"
                audio, rate = soundfile.read(SOURCE / f"{name}.wav", dtype="int16")
                assert rate == 8000 and audio.ndim == 1
                names.append(name)
                pieces.append(audio)
    return np.array(names), np.array([len(p) for p in pieces]), np.concatenate(pieces)


train = pack(["george", "jackson", "lucas", "nicolas"], range(5, 13))
test = pack(["theo"], range(5, 9))
np.savez_compressed(TARGET, sample_rate=8000, train_names=train[0], train_lengths=train[1], train_audio=train[2],
                    test_names=test[0], test_lengths=test[1], test_audio=test[2])
print(f"wrote {TARGET} ({TARGET.stat().st_size / 1e6:.2f} MB): {len(train[0])} train, {len(test[0])} test clips")
