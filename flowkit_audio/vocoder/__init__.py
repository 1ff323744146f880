"""The WaveGlow vocoder (mel spectrogram to waveform).

* :mod:`~flowkit_audio.vocoder.model`: WaveGlow, its WaveNets and presets;
* :mod:`~flowkit_audio.vocoder.fast`: the WaveNets folded for fast synthesis;
* :mod:`~flowkit_audio.vocoder.run`: ``train``, ``load``, ``evaluate``, ``vocode_files``.

Importing this package loads torch only; the run loads the audio extra when used.
"""

from .model import PRESETS, WaveGlow, WaveGlowConfig, WaveNet, preset

__all__ = ["PRESETS", "WaveGlow", "WaveGlowConfig", "WaveNet", "preset"]
