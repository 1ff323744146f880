"""Build flowkit_audio/assets/notes_demo.npz: a small attributed sample of the notes.

Five instruments of the shared notes folder (CC BY 3.0, tonejs-instruments by
N. Brosowsky): every note of violin, flute and trumpet, every second cello note and every
fourth piano note, 16 kHz mono, stored losslessly as FLAC bytes (no pickles).

    python tools/make_notes_demo.py [NOTES_FOLDER]
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import soundfile

INSTRUMENTS = {"cello": 2, "violin": 1, "flute": 1, "trumpet": 1, "piano": 4}


def main(folder: str = "../shared/data/notes") -> None:
    names, blobs = [], []
    for instrument, every in INSTRUMENTS.items():
        for path in sorted(Path(folder).glob(f"{instrument}_*.wav"))[::every]:
            audio, rate = soundfile.read(str(path), dtype="int16")
            assert rate == 16000 and audio.ndim == 1, path
            buffer = io.BytesIO()
            soundfile.write(buffer, audio, rate, format="FLAC", subtype="PCM_16")
            names.append(path.stem)
            blobs.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
    out = Path(__file__).resolve().parents[1] / "flowkit_audio" / "assets" / "notes_demo.npz"
    np.savez(out, names=np.array(names), flac=np.concatenate(blobs),
             flac_lengths=np.array([b.size for b in blobs], dtype=np.int64))
    print(f"wrote {len(names)} notes, {out.stat().st_size / 1e6:.2f} MB, to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
