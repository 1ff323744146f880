r"""WaveGlow (Prenger et al. 2019): a flow from audio to Gaussian noise, conditioned on a
mel spectrogram, built from the core's layers.

The waveform ``(B, 1, T)`` is folded into ``n_group`` channels (``Squeeze(n_group)``);
each of ``n_flows`` steps is an invertible 1x1 mixing (:class:`flowkit.Invertible1x1`)
then an affine coupling with WaveGlow's unclamped ``exp`` scale whose conditioner is a
non-causal WaveNet (:class:`WaveNet`) fed the mel spectrogram, upsampled to the audio
rate by a transposed convolution and folded like the audio (:class:`MelUpsampler`,
the flow's context network). Every ``n_early_every`` steps ``n_early_size`` channels leave
as early outputs (:class:`flowkit.FactorOut` with a fixed N(0, sigma^2) prior).

The loss is WaveGlow's, normalised per audio sample:

.. math:: \mathcal{L} = \frac{1}{T}\Big(\sum \frac{z^2}{2\sigma^2} - \sum \log s - \sum \log|\det W|\Big)
          + \tfrac12 \log 2\pi\sigma^2,

the exact negative log-likelihood in nats per sample (WaveGlow's printed loss omits the
constant). Synthesis draws ``z ~ N(0, sigma_infer^2)``: temperature ``sigma_infer / sigma``.

References:
    Prenger, Valle and Catanzaro. WaveGlow: A Flow-based Generative Network for Speech
    Synthesis. ICASSP 2019. Zhai et al. SqueezeWave: Extremely Lightweight Vocoders for
    On-device Speech Synthesis. 2020.

Example:
    >>> vocoder = WaveGlow(preset("cpu"))
    >>> mel = torch.randn(1, 80, 20)
    >>> vocoder.infer(mel, sigma=0.6).shape     # 20 frames x hop 64
    torch.Size([1, 1280])
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

import flowkit as fk
from flowkit.config import SavedConfig
from flowkit.errors import FlowkitError, ShapeError
from flowkit.layers.multiscale import divide_by_sigma

from ..features import MelConfig, log_mel

__all__ = ["MelUpsampler", "WaveGlow", "WaveGlowConfig", "WaveNet", "PRESETS", "preset"]


@dataclass
class WaveGlowConfig(SavedConfig):
    """The architecture (and the mel it is conditioned on); saved in checkpoints."""

    mel: MelConfig = field(default_factory=MelConfig)
    n_group: int = 8
    n_flows: int = 12
    n_early_every: int = 4
    n_early_size: int = 2
    wn_layers: int = 8
    wn_channels: int = 256
    wn_kernel: int = 3
    depthwise: bool = False  # SqueezeWave's depthwise-separable WaveNet layers
    upsample: bool = True  # WaveGlow's mel upsampler; False: n_group == hop, one mel frame per time step (SqueezeWave)
    sigma: float = 1.0  # training sigma (NVIDIA's code; the paper uses sqrt(0.5))

    def __post_init__(self):
        if isinstance(self.mel, dict):
            self.mel = MelConfig.from_dict(self.mel)
        counts = {"n_group": self.n_group, "n_flows": self.n_flows, "wn_layers": self.wn_layers,
                  "wn_channels": self.wn_channels, "wn_kernel": self.wn_kernel}
        most = {"n_flows": 256, "wn_layers": 64}
        bad = [f"{k}={v!r} (1 to {most.get(k, 4096)})" for k, v in counts.items()
               if not (isinstance(v, int) and not isinstance(v, bool) and 0 < v <= most.get(k, 4096))]
        if bad:
            raise FlowkitError(f"WaveGlow config out of range: {', '.join(bad)}")
        if self.wn_kernel % 2 == 0:
            raise FlowkitError(f"wn_kernel must be odd (a non-causal, length-preserving WaveNet), not {self.wn_kernel}")
        if self.n_group - self.n_early_size * ((self.n_flows - 1) // max(1, self.n_early_every)) < 2:
            raise FlowkitError("too many early outputs: the last flows need at least 2 channels")
        if not self.upsample and self.n_group != self.mel.hop_length:
            raise FlowkitError(f"conditioning on mel frames directly needs n_group == hop ({self.mel.hop_length})")
        if self.mel.hop_length % self.n_group:
            raise FlowkitError(f"n_group ({self.n_group}) must divide the hop ({self.mel.hop_length})")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise FlowkitError(f"sigma must be positive, not {self.sigma}")



PRESETS: dict[str, WaveGlowConfig] = {
    # the paper's 22.05 kHz model: 12 flows, early outputs of 2 every 4, WaveNet 8 x 256
    "waveglow": WaveGlowConfig(MelConfig(22050, 1024, 1024, 256, 80, 0.0, 8000.0)),
    # in the spirit of SqueezeWave: the audio folded by the hop (one time step per mel frame, no
    # upsampler), depthwise-separable WaveNet layers
    "light": WaveGlowConfig(MelConfig(), n_group=64, n_flows=8, n_early_every=4, n_early_size=16, wn_layers=4,
                            wn_channels=128, depthwise=True, upsample=False),
    # 8 kHz speech on a CPU in minutes
    "cpu": WaveGlowConfig(MelConfig(), n_group=8, n_flows=8, n_early_every=4, n_early_size=2, wn_layers=4,
                          wn_channels=48),
    # 16 kHz instrument notes (the notes preset's STFT: 1024-point window, hop 256), CPU size
    "notes": WaveGlowConfig(MelConfig(16000, 1024, 1024, 256, 80, 0.0, 8000.0), n_group=8, n_flows=8,
                            n_early_every=4, n_early_size=2, wn_layers=4, wn_channels=48),
}


def preset(name: str) -> WaveGlowConfig:
    """A copy of the preset ``name``."""
    if name not in PRESETS:
        raise FlowkitError(f"unknown vocoder preset {name!r}; choose from {', '.join(PRESETS)}")
    return WaveGlowConfig.from_dict(PRESETS[name].to_dict())


def _gate(x: Tensor) -> Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class WaveNet(nn.Module):
    """WaveGlow's coupling network: a non-causal WaveNet with dilations ``2^i``, gated
    ``tanh * sigmoid`` units, residual and skip connections, weight normalisation, the mel
    context added in every layer, and a zero-initialised output (each coupling starts as
    the identity). With ``depthwise`` each dilated convolution is depthwise then pointwise
    (SqueezeWave).

    Arguments:
        in_channels: the audio channels it conditions on (half of a coupling's input).
        out_channels: twice the transformed channels (shift and log-scale).
        context_channels: channels of the upsampled, folded mel.
    """

    def __init__(self, in_channels: int, out_channels: int, context_channels: int, layers: int = 8,
                 channels: int = 256, kernel_size: int = 3, depthwise: bool = False):
        super().__init__()
        self.channels = channels
        self.start = weight_norm(nn.Conv1d(in_channels, channels, 1))
        self.cond = weight_norm(nn.Conv1d(context_channels, 2 * channels * layers, 1))
        self.dilated = nn.ModuleList()
        self.res_skip = nn.ModuleList()
        for i in range(layers):
            dilation = 2**i
            padding = dilation * (kernel_size - 1) // 2
            if depthwise:
                layer = nn.Sequential(nn.Conv1d(channels, channels, kernel_size, dilation=dilation, padding=padding,
                                                groups=channels),
                                      weight_norm(nn.Conv1d(channels, 2 * channels, 1)))
            else:
                layer = weight_norm(nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation, padding=padding))
            self.dilated.append(layer)
            self.res_skip.append(weight_norm(nn.Conv1d(channels, 2 * channels if i < layers - 1 else channels, 1)))
        self.end = nn.Conv1d(channels, out_channels, 1)
        nn.init.zeros_(self.end.weight)
        nn.init.zeros_(self.end.bias)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        h = self.start(x)
        cond = self.cond(context).chunk(len(self.dilated), dim=1)
        skip = 0
        for i, (dilated, res_skip) in enumerate(zip(self.dilated, self.res_skip)):
            out = res_skip(_gate(dilated(h) + cond[i]))
            if i < len(self.dilated) - 1:
                h = h + out[:, : self.channels]
                out = out[:, self.channels:]
            skip = skip + out
        return self.end(skip)


class MelUpsampler(nn.Module):
    """The flow's context network: log-mel ``(B, n_mels, frames)`` upsampled to the audio
    rate (transposed convolution, kernel ``win_length``, stride ``hop``), trimmed to the
    audio length and folded like the audio: ``(B, n_mels * n_group, T / n_group)``.

    With ``upsample=False`` (``n_group == hop``, SqueezeWave) each time step of the folded
    audio is one mel frame: the frames themselves are the context, ``(B, n_mels, T / hop)``.
    """

    def __init__(self, mel: MelConfig, n_group: int, upsample: bool = True):
        super().__init__()
        self.mel = mel
        self.n_group = n_group
        self.upsample = nn.ConvTranspose1d(mel.n_mels, mel.n_mels, mel.win_length, stride=mel.hop_length) \
            if upsample else None

    @property
    def channels(self) -> int:
        return self.mel.n_mels * (self.n_group if self.upsample is not None else 1)

    def forward(self, logmel: Tensor, event_shape: tuple[int, ...]) -> Tensor:
        if logmel.dim() != 3 or logmel.shape[1] != self.mel.n_mels:
            raise ShapeError(f"mel spectrogram must be (batch, {self.mel.n_mels}, frames), got {tuple(logmel.shape)}")
        length = event_shape[-1]
        if self.upsample is None:
            steps = length // self.n_group
            if logmel.shape[-1] < steps:
                raise ShapeError(f"{logmel.shape[-1]} mel frames, the audio needs {steps}")
            return logmel[..., :steps]
        up = self.upsample(logmel)
        if up.shape[-1] < length:
            raise ShapeError(f"{logmel.shape[-1]} mel frames cover {up.shape[-1]} samples, fewer than the "
                             f"audio's {length}")
        return rearrange(up[..., :length], "b c (t f) -> b (c f) t", f=self.n_group)

    def implied_length(self, logmel: Tensor) -> int:
        """Audio samples synthesised from ``frames`` mel frames: ``frames * hop`` (WaveGlow's trim)."""
        return logmel.shape[-1] * self.mel.hop_length


class WaveGlow(fk.Flow):
    """A :class:`flowkit.Flow` over waveforms ``(B, 1, T)``, ``T`` a multiple of ``n_group``,
    conditioned on log-mel frames.

    ``log_prob(audio, mel)``, ``encode``/``decode`` (exact), ``infer(mel, sigma)``
    (synthesis), ``vocode(audio)`` (copy synthesis through the model's own mel).
    """

    def __init__(self, config: WaveGlowConfig):
        self.config = config
        upsampler = MelUpsampler(config.mel, config.n_group, config.upsample)
        super().__init__(self._bijector(config, upsampler.channels), event_shape=(1, None), context_net=upsampler)
        self.register_buffer("bias_spectrum", torch.zeros(0), persistent=False)  # the denoiser's, once computed

    def check_input(self, x: Tensor) -> None:
        """:meth:`flowkit.Flow.check_input`, and the samples must lie in ``[-1, 1]`` (with room
        for dequantisation noise): integer PCM left unscaled (int16 values up to 32767) would
        otherwise get a plausible-looking, wrong likelihood."""
        super().check_input(x)
        if self.validate and not torch.compiler.is_compiling() and x.numel():
            peak = float(x.detach().abs().max())
            if peak > 1.01:
                raise fk.DataError(f"audio samples must be floats in [-1, 1] (int16 PCM divided by 32768); "
                                   f"got a peak of {peak:.4g}")

    @staticmethod
    def _bijector(cfg: WaveGlowConfig, context_channels: int) -> fk.Sequential:
        def wavenet(in_channels: int, out_channels: int, context_channels: int) -> WaveNet:
            return WaveNet(in_channels, out_channels, context_channels, cfg.wn_layers, cfg.wn_channels, cfg.wn_kernel,
                           cfg.depthwise)

        def flow_step(channels: int) -> list[fk.Bijector]:
            return [fk.Invertible1x1(channels),
                    fk.AffineCoupling(channels, net=wavenet, context_channels=context_channels, scale="exp",
                                      clamp=None)]

        # stage boundaries: an early output before step k whenever k % every == 0 (NVIDIA's loop)
        starts = [k for k in range(1, cfg.n_flows) if cfg.n_early_every and k % cfg.n_early_every == 0]
        bounds = [0, *starts, cfg.n_flows]
        channels = [cfg.n_group - cfg.n_early_size * i for i in range(len(bounds) - 1)]
        inner: fk.Bijector | None = None
        for stage in reversed(range(len(bounds) - 1)):
            layers = [b for _ in range(bounds[stage], bounds[stage + 1]) for b in flow_step(channels[stage])]
            if inner is not None:
                layers.append(fk.FactorOut(channels[stage], inner, spatial_dims=1, prior="standard",
                                           keep=channels[stage + 1], sigma=cfg.sigma))
            inner = fk.Sequential(*layers)
        return fk.Sequential(fk.Squeeze(cfg.n_group), inner, _LatentScale(cfg.sigma, channels[-1]))

    def fold_weight_norm(self) -> WaveGlow:
        """Fold the weight normalisation into plain weights for synthesis (as NVIDIA's
        ``remove_weightnorm``): the same outputs without recomputing ``g v / |v|`` per call.
        The state_dict keys change, so fold only a model you will not save or train."""
        from torch.nn.utils import parametrize

        for module in self.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return self

    def prepare_synthesis(self, precision: str = "bf16", fold_upsampler: bool = True) -> WaveGlow:
        """Rewrite every WaveNet for synthesis (:class:`~flowkit_audio.vocoder.fast.SynthesisWaveNet`):
        weight norm, the start and end 1x1 layers and (``fold_upsampler``) the mel upsampler
        folded into fewer, smaller products, run channels-last in ``precision``
        (``"bf16"``: bfloat16 where the device supports it, else float32 with a warning;
        ``"float32"``). The same function up to rounding; couplings, log-dets and the 1x1
        inverses stay float32 and decode remains the exact inverse of encode. The model is
        then for synthesis only: no gradients, do not save or train it. Returns ``self``."""
        from flowkit.precision import bf16_supported

        from .fast import StackedFrames, SynthesisWaveNet

        if precision not in ("bf16", "float32"):
            raise FlowkitError(f"precision must be 'bf16' or 'float32', not {precision!r}")
        device = next(self.parameters()).device
        if precision == "bf16" and not bf16_supported(device):
            warnings.warn(f"{device} lacks native bfloat16; synthesis runs in float32", stacklevel=2)
            precision = "float32"
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        upsampler = self.context_net if fold_upsampler and self.context_net.upsample is not None else None
        for coupling in self.modules():
            if isinstance(getattr(coupling, "net", None), WaveNet):
                coupling.net = SynthesisWaveNet(coupling.net, dtype, upsampler)
        if upsampler is not None:
            mel = self.config.mel
            self.context_net = StackedFrames(mel.n_mels, mel.hop_length, mel.win_length, self.config.n_group)
        self.bias_spectrum = torch.zeros(0, device=device)
        return self.eval()

    def nll_per_sample(self, audio: Tensor, logmel: Tensor) -> Tensor:
        """The loss: negative log-likelihood in nats per audio sample, per clip."""
        return -self.log_prob(audio, logmel) / audio[0].numel()

    def mel(self, audio: Tensor) -> Tensor:
        """The model's log-mel frames of ``(B, T)`` or ``(B, 1, T)`` audio."""
        return log_mel(audio, self.config.mel)

    @torch.no_grad()
    def infer(self, logmel: Tensor, sigma: float = 0.6, denoise: float = 0.0,
              generator: torch.Generator | None = None) -> Tensor:
        """Synthesise ``(B, frames * hop)`` audio from log-mel frames; ``z ~ N(0, sigma^2)``,
        then optionally WaveGlow's denoiser of strength ``denoise`` (0.01-0.1)."""
        if not (math.isfinite(sigma) and sigma >= 0):
            raise FlowkitError(f"sigma must be a finite number >= 0, not {sigma}")
        audio = self.sample(logmel.shape[0], sigma / self.config.sigma, logmel, generator)[:, 0]
        return self.denoise(audio, denoise) if denoise > 0 else audio

    @torch.no_grad()
    def vocode(self, audio: Tensor, sigma: float = 0.6, denoise: float = 0.0) -> Tensor:
        """Copy synthesis: the model's mel of ``audio``, then :meth:`infer`; the output
        has ``frames * hop`` samples (``audio`` is cut to a multiple of the hop first)."""
        audio = audio.reshape(audio.shape[0], -1)
        usable = (audio.shape[-1] // self.config.mel.hop_length) * self.config.mel.hop_length
        return self.infer(self.mel(audio[:, :usable])[..., :-1], sigma, denoise)

    @torch.no_grad()
    def denoise(self, audio: Tensor, strength: float = 0.05) -> Tensor:
        """WaveGlow's denoiser: subtract ``strength`` times the magnitude spectrum of the
        bias audio (synthesised from an all-zero mel at sigma 0), keep the phase."""
        mel = self.config.mel
        window = torch.hann_window(mel.win_length, device=audio.device)

        def stft(x: Tensor) -> Tensor:
            return torch.stft(x, mel.n_fft, mel.hop_length, mel.win_length, window, return_complex=True)

        if self.bias_spectrum.numel() == 0:
            zero_mel = torch.zeros(1, mel.n_mels, 88, device=audio.device)
            bias_audio = self.infer(zero_mel, sigma=0.0)
            self.bias_spectrum = stft(bias_audio)[..., :1].abs()
        spectrum = stft(audio)
        magnitude = (spectrum.abs() - self.bias_spectrum * strength).clamp_min(0)
        cleaned = torch.polar(magnitude, spectrum.angle())
        return torch.istft(cleaned, mel.n_fft, mel.hop_length, mel.win_length, window, length=audio.shape[-1])


class _LatentScale(fk.Bijector):
    """The final ``z / sigma`` (WaveGlow's N(0, sigma^2) prior on the last channels)."""

    reads_context = False

    def __init__(self, sigma: float, channels: int):
        super().__init__()
        self.log_sigma = math.log(sigma)
        self.channels = channels

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._scale(x, -1.0)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._scale(y, 1.0)

    def _scale(self, x: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        kept, ladj = divide_by_sigma(x[:, : self.channels], self.log_sigma, inverse=sign > 0)
        return torch.cat([kept, x[:, self.channels:]], dim=1), ladj
