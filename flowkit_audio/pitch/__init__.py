"""Pitch (and timbre) edits through a flow latent, calibrated in semitones.

* :mod:`~flowkit_audio.pitch.run`: ``train``, ``load``, ``edit_files`` for every preset;
* :mod:`~flowkit_audio.pitch.editor`: what the editors share (the edit along a direction,
  the calibration curve);
* ``speech``: :mod:`~flowkit_audio.pitch.melflow` (the flow over log-mel frames) and
  :mod:`~flowkit_audio.pitch.mel` (its editor, direction and calibration);
* ``notes`` and ``speech-relative``: :mod:`~flowkit_audio.pitch.notespec` (the
  pitch-relative front-end), :mod:`~flowkit_audio.pitch.noteflow` (the flow conditioned on
  the pitch) and :mod:`~flowkit_audio.pitch.notes` (editor, directions, calibration);
* :mod:`~flowkit_audio.pitch.training`: crops, loss and the training call both share.
"""
