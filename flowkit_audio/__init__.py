"""flowkit_audio: audio flows built from flowkit's core layers.

* :mod:`~flowkit_audio.waveglow`: the WaveGlow vocoder (mel spectrogram to waveform);
* :mod:`~flowkit_audio.synthesis`: WaveGlow's WaveNets folded for fast synthesis;
* :mod:`~flowkit_audio.melflow`: a flow over log-mel frames whose latent carries pitch;
* :mod:`~flowkit_audio.pitch`: pitch directions calibrated in semitones;
* :mod:`~flowkit_audio.notespec`, :mod:`~flowkit_audio.noteflow`, :mod:`~flowkit_audio.notes`:
  the ``notes`` preset (instrument notes: a pitch-relative front-end, a flow conditioned
  on the pitch, MIDI and timbre directions);
* :mod:`~flowkit_audio.training`, :mod:`~flowkit_audio.calibration`: pieces both pitch
  presets share;
* :mod:`~flowkit_audio.features`: the shared mel definition, Griffin-Lim, F0 (Praat);
* :mod:`~flowkit_audio.data`: WAV files, FSDD, the embedded demo sample;
* ``flowkit audio ...``: the command line (:mod:`~flowkit_audio.cli`).

Needs the ``audio`` extra (torchaudio, soundfile, praat-parselmouth).
"""

from .features import MelConfig, f0_hz, griffin_lim, log_mel, semitones
from .waveglow import WaveGlow, WaveGlowConfig, WaveNet

__all__ = ["MelConfig", "WaveGlow", "WaveGlowConfig", "WaveNet", "f0_hz", "griffin_lim", "log_mel", "semitones"]
