r"""The ``notes`` preset of the pitch flow: a flow over the features of
:mod:`~flowkit_audio.pitch.notespec` (the pitch channel, then the note's spectrum relative to
its pitch) whose latent keeps the pitch as one coordinate.

.. math::
    z_p = \tilde p, \qquad z_S = g(\tilde S \mid \bar{\tilde p}), \qquad
    \log p(x) = \log \mathcal N(z_p) + \log \mathcal N(z_S) + \log |\det \partial g / \partial \tilde S|

where the tilde marks the per-channel standardisation fitted on the training notes and
``g`` is the 1-D multiscale Glow of :mod:`~flowkit_audio.pitch.melflow` whose couplings and
priors see the note's mean standardised pitch. This is a coupling with the pitch channel
as its identity half (:class:`PitchConditioned`): triangular Jacobian, exact inverse,
and the joint likelihood ``p(pitch) p(spectrum | pitch)``. Moving ``z`` along a direction
with a pitch component transposes the note, and the spectrum is decoded from the same
``z_S`` under the new pitch: the instrument's spectrum at that pitch, as the flow learned
it, rather than a copy of the old one.

Example:
    >>> flow = NoteFlow(NoteFlowConfig(channels=9, levels=1, depth=1, width=8))
    >>> flow.log_prob(torch.randn(2, 9, 16)).shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

import flowkit as fk
from flowkit.bijector import Shape
from flowkit.config import SavedConfig
from flowkit.errors import FlowkitError, ShapeError
from flowkit.nn import ChannelAffine

from .melflow import FrameFlow, MelFlowConfig, multiscale_1d

__all__ = ["NoteFlow", "NoteFlowConfig", "PitchConditioned"]

MIN_BAND_STD = 1.0


@dataclass
class NoteFlowConfig(SavedConfig):
    """Architecture of the note flow; saved in checkpoints. ``channels`` = 1 + bands."""

    channels: int = 217
    levels: int = 2
    depth: int = 4
    width: int = 128
    # dequantisation noise (std, standardised units) while training; 0.05 let the flow fit the
    # near-constant bands of sustained notes so sharply that held-out NLL rose after 50 steps
    # on 66 notes, 0.2 kept it falling
    noise: float = 0.2

    def __post_init__(self):
        if not (isinstance(self.channels, int) and 2 <= self.channels <= 4097):
            raise FlowkitError(f"note flow config: channels must be an integer in 2..4097, not {self.channels!r}")
        MelFlowConfig(n_mels=self.channels - 1, levels=self.levels, depth=self.depth, width=self.width)


class PitchConditioned(fk.Bijector):
    r"""``(p, S) -> (p, g(S | mean_t p))``: the first channel passes unchanged and
    conditions ``inner`` (a bijector over the other channels taking a ``(B, 1)`` context)
    through its mean over positions.

    Arguments:
        inner: a shape-preserving bijector over ``channels - 1`` channels that accepts a
            ``(B, 1)`` context.

    Example:
        >>> inner = flowkit.AffineCoupling(4, hidden=8, spatial_dims=1, context_channels=1)
        >>> layer = PitchConditioned(inner)
        >>> x = torch.randn(2, 5, 6)
        >>> torch.allclose(layer.inverse(layer(x)[0])[0], x, atol=1e-5)
        True
    """

    reads_context = False  # it conditions ``inner`` on the pitch channel, never on the flow's context

    def __init__(self, inner: fk.Bijector):
        super().__init__()
        self.inner = inner

    @staticmethod
    def _split(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if x.dim() < 3 or x.shape[1] < 2:
            raise ShapeError(f"PitchConditioned needs (batch, channels >= 2, positions...), got {tuple(x.shape)}")
        pitch = x[:, :1]
        return pitch, x[:, 1:], pitch.mean(dim=tuple(range(2, x.dim())))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        pitch, rest, condition = self._split(x)
        y, ladj = self.inner(rest, condition)
        return torch.cat([pitch, y], dim=1), ladj

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        pitch, rest, condition = self._split(y)
        x, ladj = self.inner.inverse(rest, condition)
        return torch.cat([pitch, x], dim=1), ladj

    def forward_shape(self, shape: Sequence[int]) -> Shape:
        return tuple(shape)

    def inverse_shape(self, shape: Sequence[int]) -> Shape:
        return tuple(shape)


class NoteFlow(FrameFlow):
    """:class:`PitchConditioned` over the notes features: a :class:`FrameFlow` of
    ``channels`` (the pitch, then the bands)."""

    def __init__(self, config: NoteFlowConfig):
        inner_config = MelFlowConfig(n_mels=config.channels - 1, levels=config.levels, depth=config.depth,
                                     width=config.width)
        super().__init__(PitchConditioned(multiscale_1d(config.channels - 1, inner_config, context_channels=1)),
                         config.channels, config.levels)
        self.config = config
        for module in self.modules():
            if isinstance(module, ChannelAffine):  # ActNorm layers and the conditioners' norms
                # the features are standardised with the whole training set; a data-dependent
                # init from one batch of 16 crops blew up training on the 48-note demo sample
                module.mark_initialized()

    def fit_standardisation(self, features: list[Tensor], min_std: float = MIN_BAND_STD) -> None:
        """Per-channel mean and std: the bands' over every frame, the pitch's over notes.

        A band's std is floored at ``MIN_BAND_STD`` nats: bands that sit at the log floor
        for almost every note (above Nyquist for high notes) would otherwise standardise a
        rare loud value to hundreds of units and blow up the couplings."""
        super().fit_standardisation(features, min_std)
        pitches = torch.stack([f[0].mean() for f in features])
        if pitches.numel() > 1:
            self.mean[0, 0], self.std[0, 0] = pitches.mean(), pitches.std().clamp_min(1e-3)
