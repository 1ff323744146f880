r"""Fast WaveGlow synthesis: each WaveNet rewritten as the same function with less work.

A trained :class:`~flowkit_audio.vocoder.model.WaveNet` computes, per layer :math:`i`,

.. math:: a_i = D_i * h_i + c_i, \quad g_i = \tanh(a_i^{1}) \odot \sigma(a_i^{2}), \quad
          h_{i+1} = h_i + R_i g_i, \quad y = W_e \textstyle\sum_i S_i g_i

with :math:`h_0 = W_s x`, the conditioning :math:`c = W_c\,\mathrm{fold}(U * m)` of the
upsampled mel and biases left out. :class:`SynthesisWaveNet` computes the same outputs
(up to rounding) after exact algebraic folds, composed in float64 (float32 for the large
conditioning matrix):

* weight normalisation folded into the weights;
* the start 1x1 composed into the first dilated convolution, :math:`D_0 * (W_s x) =
  (D_0 W_s) * x`: a convolution from the few audio channels instead of from 256. Its bias
  response is constant except where the zero padding cuts taps, corrected there;
* the end 1x1 composed into every skip half, :math:`W_e S_i`: the skip sum is linear, so
  each layer emits ``out_channels`` skip channels (8) instead of ``channels`` (256);
* with the mel upsampler (``fold_upsampler``): the transposed convolution :math:`U`, the
  fold into ``n_group`` channels and :math:`W_c` compose to one matrix per phase. The time
  step :math:`t = r q + p` (``r = hop / n_group`` steps per frame) sees only the ``J =
  win / hop`` frames :math:`m_q, \dots, m_{q-J+1}`, so :math:`c_t = K_p [m_q; \dots;
  m_{q-J+1}]`: :math:`J \cdot n_{mels}` inputs (320) instead of :math:`n_{mels} \cdot
  n_{group}` (640), half the work of the widest layer, one matrix product per layer that
  adds straight into the convolution's output (``addmm_``; :class:`StackedFrames` stacks
  the frames once for all flows). It costs memory:
  :math:`J n_{mels} \times r \cdot 2 C L` per coupling (42 M values, 84 MB in bfloat16, at
  the paper's size);
* the gate :math:`\tanh(a)\sigma(b) = (2\sigma(2a) - 1)\sigma(b)`, the factor 2 folded into
  the weights: one sigmoid over both halves, then one fused multiply-add.

It runs in ``dtype`` (bfloat16 on CPUs with AVX-512 BF16, where the matrix products run
faster than in float32; docs/audio.md measures it) with activations channels-last, the layout oneDNN's
convolutions are fastest in. It holds no parameters and refuses to run with autograd on:
it is for synthesis (``infer``, ``vocode``, ``encode``/``decode`` under ``torch.no_grad``).
Decoding inverts encoding: both directions see the same network (in bfloat16 up to
rounding straddles; see :mod:`flowkit.precision`).

References:
    Prenger, Valle and Catanzaro. WaveGlow: A Flow-based Generative Network for Speech
    Synthesis. ICASSP 2019.

Example:
    >>> from flowkit_audio.vocoder.model import WaveGlow, preset
    >>> model = WaveGlow(preset("cpu")).eval()
    >>> mel = torch.randn(1, 80, 20)
    >>> reference = model.infer(mel, sigma=0.0)
    >>> fast = model.prepare_synthesis(precision="float32").infer(mel, sigma=0.0)
    >>> bool((fast - reference).abs().max() < 1e-4)
    True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit.errors import FlowkitError, ShapeError

__all__ = ["StackedFrames", "SynthesisWaveNet"]


def _weight(conv: nn.Conv1d) -> Tensor:
    """A convolution's weight (weight norm applied), float64, detached."""
    return conv.weight.detach().double()


def _bias(conv: nn.Conv1d) -> Tensor:
    if conv.bias is None:
        return torch.zeros(conv.out_channels, dtype=torch.float64, device=conv.weight.device)
    return conv.bias.detach().double()


def _gate_scale(channels: int, like: Tensor) -> Tensor:
    """``(2C,)``: 2 on the tanh half (``tanh(a) = 2 sigmoid(2a) - 1``), 1 on the sigmoid half."""
    scale = torch.ones(2 * channels, dtype=like.dtype, device=like.device)
    scale[:channels] = 2.0
    return scale


def _conv_weight(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """A conv1d weight ``(O, I, K)`` as a channels-last conv2d weight ``(O, I, 1, K)``."""
    return weight[:, :, None].to(dtype).contiguous(memory_format=torch.channels_last)


class StackedFrames(nn.Module):
    r"""The context network of a synthesis-ready WaveGlow with a folded upsampler: log-mel
    frames ``(B, n_mels, F)`` to the stacked frames each time-step block sees,
    ``(B, Q, J * n_mels)`` with row :math:`q` = :math:`[m_q; m_{q-1}; \dots; m_{q-J+1}]`
    (zeros before the first frame) and ``Q = ceil(T / r)`` blocks of ``r`` time steps."""

    def __init__(self, n_mels: int, hop: int, win: int, n_group: int):
        super().__init__()
        self.n_mels, self.hop, self.win, self.n_group = n_mels, hop, win, n_group
        self.frames_seen = math.ceil(win / hop)
        self.steps_per_frame = hop // n_group

    def forward(self, logmel: Tensor, event_shape: tuple[int, ...]) -> Tensor:
        if logmel.dim() != 3 or logmel.shape[1] != self.n_mels:
            raise ShapeError(f"mel spectrogram must be (batch, {self.n_mels}, frames), got {tuple(logmel.shape)}")
        length = event_shape[-1]
        covered = self.hop * (logmel.shape[-1] - 1) + self.win
        if covered < length:
            raise ShapeError(f"{logmel.shape[-1]} mel frames cover {covered} samples, fewer than the audio's {length}")
        blocks = math.ceil(length // self.n_group / self.steps_per_frame)
        j = self.frames_seen
        padded = F.pad(logmel, (j - 1, max(0, blocks - logmel.shape[-1])))[..., : blocks + j - 1]
        windows = padded.unfold(2, j, 1).flip(-1)  # (B, M, Q, J): window w holds frame q - w
        return windows.permute(0, 2, 3, 1).reshape(logmel.shape[0], blocks, j * self.n_mels)

    def implied_length(self, logmel: Tensor) -> int:
        return logmel.shape[-1] * self.hop


class SynthesisWaveNet(nn.Module):
    """A :class:`~flowkit_audio.vocoder.model.WaveNet` folded for synthesis (see the module).

    Arguments:
        net: the trained WaveNet (left unchanged).
        dtype: the precision it runs in (``torch.bfloat16`` or ``torch.float32``).
        upsampler: the WaveGlow's :class:`~flowkit_audio.vocoder.model.MelUpsampler` to fold
            into the conditioning (the context is then :class:`StackedFrames`' output);
            ``None``: the context is the usual upsampled, folded mel ``(B, C_ctx, T)``.
    """

    def __init__(self, net: nn.Module, dtype: torch.dtype = torch.bfloat16, upsampler: nn.Module | None = None):
        super().__init__()
        self.dtype = dtype
        self.channels = c = net.channels
        self.layers = n = len(net.dilated)
        self.depthwise = isinstance(net.dilated[0], nn.Sequential)
        w_end, b_end = _weight(net.end)[:, :, 0], _bias(net.end)
        self.out_channels = w_end.shape[0]
        gate_scale = _gate_scale(c, w_end)

        w_cond, b_cond = _weight(net.cond)[:, :, 0], _bias(net.cond)
        if upsampler is not None:
            per_step, bias_share = self._fold_upsampler(w_cond, upsampler)
            b_cond = b_cond + bias_share
        if upsampler is None:  # rows: context channels; one time step per row
            per_step = (w_cond * gate_scale.repeat(n)[:, None]).t().float()
        self.steps_per_row = upsampler.mel.hop_length // upsampler.n_group if upsampler is not None else 1
        per_step = per_step.reshape(per_step.shape[0], self.steps_per_row, n, 2 * c)
        for i in range(n):  # layer i's conditioning: context rows @ cond{i}, r time steps of 2C channels per row
            self.register_buffer(f"cond{i}", per_step[:, :, i].reshape(per_step.shape[0], -1).to(dtype).contiguous(),
                                 persistent=False)

        w_start, b_start = _weight(net.start)[:, :, 0], _bias(net.start)
        self.register_buffer("start_weight", _conv_weight(w_start[:, :, None], dtype), persistent=False)
        self.register_buffer("start_bias", b_start.to(dtype), persistent=False)
        self.dilations: list[int] = []
        for i, layer in enumerate(net.dilated):
            conv = layer[1] if self.depthwise else layer
            weight, bias = _weight(conv), _bias(conv) + b_cond[2 * c * i: 2 * c * (i + 1)]
            weight, bias = weight * gate_scale[:, None, None], bias * gate_scale
            dilation = (layer[0] if self.depthwise else layer).dilation[0]
            if i == 0 and not self.depthwise:  # D_0 * (W_s x + b_s) = (D_0 W_s) * x + D_0 * b_s
                taps = torch.einsum("ock,c->ok", weight, b_start)  # each tap's response to the start bias
                self.register_buffer("border_taps", taps.t().contiguous(), persistent=False)
                weight, bias = torch.einsum("ock,ci->oik", weight, w_start), bias + taps.sum(-1)
            self.dilations.append(dilation)
            self._store(f"dilated{i}", _conv_weight(weight, dtype), bias.to(dtype))
            if self.depthwise:
                self._store(f"depthwise{i}", _conv_weight(_weight(layer[0]), dtype), _bias(layer[0]).to(dtype))
        self.kernel_size = (net.dilated[0][0] if self.depthwise else net.dilated[0]).kernel_size[0]

        skip_bias = torch.zeros(c, dtype=torch.float64, device=w_end.device)
        for i, conv in enumerate(net.res_skip):
            weight, bias = _weight(conv)[:, :, 0], _bias(conv)
            residual = i < n - 1
            w_skip, b_skip = (weight[c:], bias[c:]) if residual else (weight, bias)
            skip_bias = skip_bias + b_skip
            folded = w_end @ w_skip  # W_e S_i: the end 1x1 moved into every skip half
            if residual:
                weight = torch.cat([weight[:c], folded])
                bias = torch.cat([bias[:c], torch.zeros(self.out_channels, dtype=torch.float64, device=bias.device)])
            else:
                weight, bias = folded, torch.zeros(self.out_channels, dtype=torch.float64, device=bias.device)
            self._store(f"res_skip{i}", _conv_weight(weight[:, :, None], dtype), bias.to(dtype))
        self.register_buffer("end_bias", (b_end + w_end @ skip_bias).float(), persistent=False)

    def _store(self, name: str, weight: Tensor, bias: Tensor) -> None:
        self.register_buffer(f"{name}_weight", weight, persistent=False)
        self.register_buffer(f"{name}_bias", bias, persistent=False)

    def _layer(self, name: str) -> tuple[Tensor, Tensor]:
        return getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias")

    def _fold_upsampler(self, w_cond: Tensor, upsampler: nn.Module) -> tuple[Tensor, Tensor]:
        """``K`` (``J * n_mels`` x ``r * 2CL``, the gate's factor 2 in it) and the upsampler
        bias's share of the conditioning bias."""
        mel, group = upsampler.mel, upsampler.n_group
        hop, win, n_mels = mel.hop_length, mel.win_length, mel.n_mels
        frames_seen, steps = math.ceil(win / hop), hop // group
        up = upsampler.upsample.weight.detach().float()  # (M in, M out, win)
        up = F.pad(up, (0, frames_seen * hop - win)).reshape(n_mels, n_mels, frames_seen * steps, group)
        cond = w_cond.float().reshape(-1, n_mels, group)  # channel c * group + g
        n_cond = cond.shape[0]
        cond = cond * _gate_scale(self.channels, cond).repeat(n_cond // (2 * self.channels))[:, None, None]
        # K[(j, m), (p, o)] = sum_{c, g} U[m, c, group * (steps * j + p) + g] W_c[o, c * group + g]
        k = up.permute(2, 0, 1, 3).reshape(frames_seen * steps * n_mels, n_mels * group) \
            @ cond.reshape(n_cond, n_mels * group).t()
        k = k.reshape(frames_seen, steps, n_mels, n_cond).permute(0, 2, 1, 3).reshape(frames_seen * n_mels,
                                                                                       steps * n_cond)
        bias_up = upsampler.upsample.bias.detach().double()
        return k, w_cond.reshape(-1, n_mels, group).sum(-1) @ bias_up

    def _add_conditioning(self, a: Tensor, rows: Tensor, i: int) -> None:
        """``a += `` layer ``i``'s conditioning, in place; ``rows``: ``(B, Q, context)``, one
        row per ``r`` time steps. When the steps fill the rows exactly, the sum is fused into
        the matrix product (``a`` is channels-last: ``(B, T, 2C)`` in memory)."""
        weight = getattr(self, f"cond{i}")
        batch, blocks, steps = rows.shape[0], rows.shape[1], a.shape[-1]
        if steps == blocks * self.steps_per_row:
            a.permute(0, 2, 3, 1).view(batch * blocks, -1).addmm_(rows.reshape(batch * blocks, -1), weight)
        else:
            cond = (rows @ weight).reshape(batch, blocks * self.steps_per_row, -1)[:, :steps]
            a.add_(cond.transpose(1, 2)[:, :, None])

    def _first_layer(self, x: Tensor) -> Tensor:
        """The first dilated convolution applied straight to the audio channels."""
        dilation = self.dilations[0]
        a = F.conv2d(x, *self._layer("dilated0"), padding=(0, dilation * (self.kernel_size // 2)),
                     dilation=(1, dilation))
        steps, reach = a.shape[-1], self.kernel_size // 2
        for t in [*range(min(reach * dilation, steps)), *range(max(reach * dilation, steps - reach * dilation), steps)]:
            cut = [j for j in range(self.kernel_size) if not 0 <= t + (j - reach) * dilation < steps]
            a[..., t] -= self.border_taps[cut].sum(0).to(a.dtype)[None, :, None]
        return a

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            raise FlowkitError("this WaveGlow is prepared for synthesis only (no gradients); run it under "
                               "torch.no_grad(), or load the checkpoint again to train")
        c, steps = self.channels, x.shape[-1]
        rows = context if self.steps_per_row > 1 else context.transpose(1, 2)
        rows = rows.to(self.dtype).contiguous()
        x = x[:, :, None].to(self.dtype).contiguous(memory_format=torch.channels_last)
        h = F.conv2d(x, self.start_weight, self.start_bias)
        y = torch.zeros(x.shape[0], steps, self.out_channels, dtype=torch.float32, device=x.device)
        for i in range(self.layers):
            if i == 0 and not self.depthwise:
                a = self._first_layer(x)
            elif self.depthwise:
                a = F.conv2d(h, *self._layer(f"depthwise{i}"), padding=(0, self.dilations[i] * (self.kernel_size // 2)),
                             dilation=(1, self.dilations[i]), groups=c)
                a = F.conv2d(a, *self._layer(f"dilated{i}"))
            else:
                a = F.conv2d(h, *self._layer(f"dilated{i}"), padding=(0, self.dilations[i] * (self.kernel_size // 2)),
                             dilation=(1, self.dilations[i]))
            self._add_conditioning(a, rows, i)
            u_tanh, u_sigmoid = a.sigmoid_().split(c, dim=1)
            g = torch.addcmul(u_sigmoid.neg(), u_tanh, u_sigmoid, value=2.0)  # (2 sigmoid(2a) - 1) sigmoid(b)
            out = F.conv2d(g, *self._layer(f"res_skip{i}"))
            if i < self.layers - 1:
                h.add_(out[:, :c])
            y += out[:, -self.out_channels:, 0].transpose(1, 2)
        return (y + self.end_bias).transpose(1, 2)
