"""flowkit_audio: audio flows built from flowkit's core layers.

* :mod:`~flowkit_audio.vocoder`: the WaveGlow vocoder (model, fast synthesis, run: train,
  load, evaluate, vocode);
* :mod:`~flowkit_audio.pitch`: pitch and timbre edits through a flow latent, calibrated in
  semitones, for speech (``speech``, ``speech-relative``) and instrument notes (``notes``);
  one run (train, load, edit_files) for every preset;
* :mod:`~flowkit_audio.features`: the shared mel definition, Griffin-Lim, F0 (Praat);
* :mod:`~flowkit_audio.data`: WAV files, FSDD, the embedded demo sample;
* :mod:`~flowkit_audio.plots`: spectrogram pictures;
* :mod:`~flowkit_audio.demo`: ``flowkit audio demo [--preset notes]``;
* ``flowkit audio ...``: the command line (:mod:`~flowkit_audio.cli`).

Needs the ``audio`` extra (torchaudio, soundfile, praat-parselmouth).
"""

from .features import MelConfig, f0_hz, griffin_lim, log_mel, semitones
from .vocoder.model import WaveGlow, WaveGlowConfig, WaveNet

__all__ = ["MelConfig", "WaveGlow", "WaveGlowConfig", "WaveNet", "f0_hz", "griffin_lim", "log_mel", "semitones"]
