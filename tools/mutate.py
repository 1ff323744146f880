"""Mutation testing with a curated list of planted bugs: ``make mutate``.

Each mutation replaces one snippet of the core (layers, flow, multiscale, reversible
backprop, checkpointing, the engine, the conformance kit) with a realistic bug, in a
scratch copy of the project, and runs the tests of the file the bug lives in. A
mutation that no test catches *survives*: either a blind spot of the tests, or a
change that does not alter behaviour (listed with the reason in docs/testing.md).

    python tools/mutate.py            # every mutation; table on stdout, JSON in out/mutate.json
    python tools/mutate.py -k coupling

Why a curated list rather than mutmut or cosmic-ray: their operators (swap ``+``/``-``,
change constants) mostly produce crashes or bugs every test catches, and a full run
over the core takes hours on 2 cores; these mutations are the bugs that did ship
unnoticed in flow libraries (detached conditioners, log-det signs and factors, float32
inverses, lost checkpoints), and the whole list runs in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    original: str
    mutated: str
    tests: tuple[str, ...]


MUTATIONS = [
    Mutation("coupling: conditioner sees x_a.detach()", "flowkit/layers/coupling.py",
             "h = self.net(x_a, context) if self.uses_context else self.net(x_a)",
             "h = self.net(x_a.detach(), context) if self.uses_context else self.net(x_a.detach())",
             ("tests/layers/test_coupling.py",)),
    Mutation("coupling: affine log-det sign flipped", "flowkit/layers/coupling.py",
             "return (x_b + shift) * log_scale.exp(), sum_except_batch(log_scale)",
             "return (x_b + shift) * log_scale.exp(), -sum_except_batch(log_scale)",
             ("tests/layers/test_coupling.py",)),
    Mutation("coupling: inverse forgets the shift", "flowkit/layers/coupling.py",
             "return x_b * (-log_scale).exp() - shift, -sum_except_batch(log_scale)",
             "return x_b * (-log_scale).exp(), -sum_except_batch(log_scale)",
             ("tests/layers/test_coupling.py",)),
    Mutation("coupling: exp scale without its soft clamp", "flowkit/layers/coupling.py",
             "log_scale = raw if self.clamp is None else self.clamp * torch.tanh(raw / self.clamp)", "log_scale = raw",
             ("tests/layers/test_coupling.py",)),
    Mutation("1x1: log-det without its position factor", "flowkit/layers/mixing.py",
             "ladj = (self._cached_log_abs_det() * spatial_size(x)).to(x.dtype)",
             "ladj = (self._cached_log_abs_det()).to(x.dtype)",
             ("tests/layers/test_mixing.py",)),
    Mutation("1x1: float32 inverse", "flowkit/layers/mixing.py",
             "lambda: torch.linalg.inv(self.matrix64()).to(params[0].dtype)",
             "lambda: torch.linalg.inv(self.matrix()).to(params[0].dtype)",
             ("tests/layers/test_mixing.py",)),
    Mutation("1x1 LU: log-det ignores one log_s", "flowkit/layers/mixing.py",
             "return self.log_s.sum()", "return self.log_s[1:].sum()",
             ("tests/layers/test_mixing.py",)),
    Mutation("actnorm: inverse adds the bias", "flowkit/layers/actnorm.py",
             "x = torch.addcmul(self._broadcast(-self.bias, y), y, self._broadcast((-logs).exp(), y))",
             "x = torch.addcmul(self._broadcast(self.bias, y), y, self._broadcast((-logs).exp(), y))",
             ("tests/layers/test_actnorm.py",)),
    Mutation("actnorm: inverse scale slightly off", "flowkit/layers/actnorm.py",
             "self._broadcast((-logs).exp(), y))", "self._broadcast((-1.001 * logs).exp(), y))",
             ("tests/layers/test_actnorm.py",)),
    Mutation("actnorm: log-det without its position factor", "flowkit/layers/actnorm.py",
             "return y, (logs.sum() * spatial_size(x)).expand(x.shape[0])",
             "return y, (logs.sum()).expand(x.shape[0])",
             ("tests/layers/test_actnorm.py",)),
    Mutation("actnorm: initialises from an empty or NaN batch", "flowkit/nn.py",
             '        check_finite(x, "the batch ActNorm initialises from")\n', "",
             ("tests/layers/test_actnorm.py",)),
    Mutation("flow: an overflowing decode returns inf silently", "flowkit/flow.py",
             "if self.validate and not torch.isfinite(x).all():", "if False:",
             ("tests/test_flow.py",)),
    Mutation("factor-out: prior sees z1.detach()", "flowkit/layers/multiscale.py",
             "h = self.prior(z1, context if self.uses_context else None)",
             "h = self.prior(z1.detach(), context if self.uses_context else None)",
             ("tests/layers/test_multiscale.py",)),
    Mutation("factor-out: standardisation log-det sign", "flowkit/layers/multiscale.py",
             "return (z - mean) * (-logs).exp(), -sum_except_batch(logs)",
             "return (z - mean) * (-logs).exp(), sum_except_batch(logs)",
             ("tests/layers/test_multiscale.py",)),
    Mutation("factor-out: fixed-scale prior's log-det forgets sigma", "flowkit/layers/multiscale.py",
             "z.new_full((z.shape[0],), sign * log_sigma * z[0].numel())", "z.new_zeros(z.shape[0])",
             ("tests/layers/test_multiscale.py",)),
    Mutation("factor-out: keep ignored (always half)", "flowkit/layers/multiscale.py",
             "        self.split = keep\n", "        self.split = channels // 2\n",
             ("tests/layers/test_multiscale.py",)),
    Mutation("coupling: context channels summed for a factory that asks for them", "flowkit/layers/coupling.py",
             "return factory(in_channels, out_channels, context_channels=context_channels)",
             "return factory(in_channels + context_channels, out_channels, context_channels=context_channels)",
             ("tests/layers/test_coupling.py",)),
    Mutation("flow: decode skips the context network", "flowkit/flow.py",
             "        context = self.embed_context(context, event_shape)\n"
             "        x = self.bijector.inverse(z, context)[0]",
             "        x = self.bijector.inverse(z, context)[0]",
             ("tests/test_flow.py",)),
    Mutation("manipulate: directions encoded in training mode", "flowkit/manipulate.py",
             "    total, seen = None, 0\n    with evaluation_mode(flow):",
             "    total, seen = None, 0\n    with torch.no_grad():",
             ("tests/test_manipulate.py",)),
    Mutation("squeeze: 2-D inverse uses another channel order", "flowkit/layers/squeeze.py",
             '"b (c f1 f2) h w -> b c (h f1) (w f2)"', '"b (c f2 f1) h w -> b c (h f1) (w f2)"',
             ("tests/layers/test_squeeze.py",)),
    Mutation("spline: inverse log-derivative not negated", "flowkit/layers/spline.py",
             "        log_deriv = -log_deriv\n", "        log_deriv = log_deriv\n",
             ("tests/layers/test_spline.py",)),
    Mutation("flow: log_prob subtracts the log-det", "flowkit/flow.py",
             "return self.base.log_prob(z) + ladj", "return self.base.log_prob(z) - ladj",
             ("tests/test_flow.py",)),
    Mutation("flow: sample ignores the temperature", "flowkit/distributions.py",
             "return z * temperature", "return z",
             ("tests/test_flow.py",)),
    Mutation("reversible: chain walks the layers forwards", "flowkit/reversible.py",
             "for layer in reversed(layers):\n        y, grad_y = layer.reversible_backward",
             "for layer in layers:\n        y, grad_y = layer.reversible_backward",
             ("tests/test_reversible.py",)),
    Mutation("reversible: accumulate_grads still holds gradients to the chain's end", "flowkit/reversible.py",
             "        if self.accumulate_grads:\n", "        if False:\n", ("tests/test_reversible.py",)),
    Mutation("in backward: gradient kept after the step", "flowkit/train/in_backward.py",
             "        for p in self._bucket:\n            p.grad = None\n",
             "        for p in self._bucket:\n            pass\n",
             ("tests/train/test_in_backward.py",)),
    Mutation("in backward: a full bucket waits for the end of backward", "flowkit/train/in_backward.py",
             "        if self._bucket_size >= self.bucket_bytes:", "        if False:",
             ("tests/train/test_in_backward.py",)),
    Mutation("in backward: non-finite gradient applied", "flowkit/train/in_backward.py",
             "        if torch.isfinite(square):", "        if True:", ("tests/train/test_in_backward.py",)),
    Mutation("checkpoint: no fsync of the files", "flowkit/train/checkpoint.py",
             "        _fsync(tmp / name)\n    with (tmp / \"config.json\")",
             "    with (tmp / \"config.json\")",
             ("tests/train/test_faults.py",)),
    Mutation("checkpoint: resume ignores a complete .tmp", "flowkit/train/checkpoint.py",
             'for folder in (sibling(path, ".old"), sibling(path, ".tmp")):\n        config = _complete_config(folder)',
             'for folder in (sibling(path, ".old"),):\n        config = _complete_config(folder)',
             ("tests/train/test_faults.py",)),
    Mutation("checkpoint: loading accepts NaN weights", "flowkit/train/checkpoint.py",
             "        if bad:\n            raise CheckpointError(f\"{path}: the {what} weights",
             "        if False:\n            raise CheckpointError(f\"{path}: the {what} weights",
             ("tests/train/test_engine.py",)),
    Mutation("engine: signals do not stop training", "flowkit/train/engine.py",
             "if not done and dist.any_rank(stop.requested):", "if False:",
             ("tests/train/test_faults.py",)),
    Mutation("engine: resume restarts the warmup", "flowkit/train/engine.py",
             "        self.scheduler.last_epoch = self.step\n", "",
             ("tests/train/test_engine.py",)),
    Mutation("kit: gradient check switched off", "flowkit/testing/check.py",
             "    failures += _gradient_failures(b, x[:2], None if ctx is None else ctx[:2], generator)\n", "",
             ("tests/testing/test_check.py",)),
    Mutation("kit: Jacobian log-det check switched off", "flowkit/testing/check.py",
             "expect(_close(ladj[i], expected, 1e-5, 1e-5),", "expect(True,",
             ("tests/testing/test_check.py",)),
    Mutation("1x1: set_matrix stores the transpose", "flowkit/layers/mixing.py",
             "        self.weight.copy_(weight)\n", "        self.weight.copy_(weight.T)\n",
             ("tests/layers/test_mixing.py",)),
    Mutation("manipulate: regression slope without centring the labels", "flowkit/manipulate.py",
             "centred = v - _group_means(v, groups)", "centred = v - 0 * _group_means(v, groups)",
             ("tests/test_manipulate.py",)),
    Mutation("manipulate: regression groups ignored (pooled slope)", "flowkit/manipulate.py",
             "    if groups is None:\n        return v.mean().expand_as(v)",
             "    if True:\n        return v.mean().expand_as(v)",
             ("tests/test_manipulate.py",)),
    Mutation("precision: no float32 fallback without bfloat16", "flowkit/precision.py",
             'if precision == "bf16-conditioners" and not bf16_supported(device):', "if False:",
             ("tests/test_precision.py",)),
    Mutation("notes: rendering ignores the pitch channel", "flowkit_audio/pitch/notespec.py",
             "f0 = midi_to_hz(features[0].double())",
             "f0 = midi_to_hz(features[0].double().mean().expand(features.shape[1]) * 0 + 60.0)",
             ("tests/audio/test_notes.py",)),
    Mutation("notes: the spectrum conditions on itself", "flowkit_audio/pitch/noteflow.py",
             "return pitch, x[:, 1:], pitch.mean(dim=tuple(range(2, x.dim())))",
             "return pitch, x[:, 1:], x[:, 1:2].mean(dim=tuple(range(2, x.dim())))",
             ("tests/audio/test_notes.py",)),
    Mutation("notes: timbre offsets keep the pitch coordinate", "flowkit_audio/pitch/notes.py",
             "    offsets[:, 0] = 0.0", "    offsets[:, 0] = offsets[:, 0]",
             ("tests/audio/test_notes.py",)),
    Mutation("text: whitening log-det sign flipped", "flowkit_text/whitening.py",
             "ladj = -0.5 * self.eigenvalues.log().sum()", "ladj = 0.5 * self.eigenvalues.log().sum()",
             ("tests/text/test_model.py",)),
    Mutation("text: whitening inverse forgets the mean", "flowkit_text/whitening.py",
             "x = (z.double() @ back.T + self.mean).to(z.dtype)", "x = (z.double() @ back.T).to(z.dtype)",
             ("tests/text/test_model.py",)),
    Mutation("text: whitening init skips the rotation", "flowkit_text/model.py",
             "first_mix.set_matrix(vectors[:, values.argsort(descending=True)].T)", "pass",
             ("tests/text/test_model.py",)),
    Mutation("synthesis: no border correction of the folded start bias", "flowkit_audio/vocoder/fast.py",
             "            a[..., t] -= self.border_taps[cut]", "            a[..., t] -= 0 * self.border_taps[cut]",
             ("tests/audio/test_synthesis.py",)),
    Mutation("synthesis: frames stacked oldest first", "flowkit_audio/vocoder/fast.py",
             "windows = padded.unfold(2, j, 1).flip(-1)", "windows = padded.unfold(2, j, 1)",
             ("tests/audio/test_synthesis.py",)),
    Mutation("synthesis: upsampler bias left out of the fold", "flowkit_audio/vocoder/fast.py",
             "            b_cond = b_cond + bias_share", "            b_cond = b_cond + 0 * bias_share",
             ("tests/audio/test_synthesis.py",)),
    Mutation("synthesis: skip halves not composed with the end layer", "flowkit_audio/vocoder/fast.py",
             "folded = w_end @ w_skip", "folded = w_end @ torch.eye(w_skip.shape[0], w_skip.shape[1]).double()",
             ("tests/audio/test_synthesis.py",)),
    Mutation("synthesis: tanh half not pre-scaled for 2 sigmoid(2a) - 1", "flowkit_audio/vocoder/fast.py",
             "    scale[:channels] = 2.0", "    scale[:channels] = 1.0",
             ("tests/audio/test_synthesis.py",)),
    Mutation("speech-relative: edits keep the edited envelope, not the input's", "flowkit_audio/pitch/notespec.py",
             "    if reference is None or spec.formant_lifter == 0:", "    if True:",
             ("tests/audio/test_notes.py",)),
    Mutation("speech-relative: direction fitted across speakers", "flowkit_audio/pitch/notes.py",
             "        return tracked, [str(c.speaker) for c in clips], \"tracked pitch within speakers (FSDD names)\"",
             "        return tracked, [\"all\"] * len(clips), \"tracked pitch within speakers (FSDD names)\"",
             ("tests/audio/test_notes.py",)),
    Mutation("text: noise only where the data varies", "flowkit_text/model.py",
             "self.noise_std.fill_(self.config.noise * float(x.double().var(0).mean().sqrt()))",
             "self.noise_std.copy_(self.config.noise * x.std(0))",
             ("tests/text/test_model.py",)),
    Mutation("text: steering edits are not projected to the sphere", "flowkit_text/steer.py",
             "return torch.nn.functional.normalize(x, dim=1) if normalise else x", "return x",
             ("tests/text/test_run.py",)),
    Mutation("text: early stopping keeps the last weights", "flowkit_text/run.py",
             "            self.model.load_state_dict(self.state)\n",
             "            pass\n",
             ("tests/text/test_run.py",)),
    Mutation("text: held-out split by position, not by text", "flowkit_text/run.py",
             "digests = [hashlib.sha256(s.encode(\"utf-8\")).digest() for s in sentences]",
             "digests = [hashlib.sha256(str(i).encode(\"utf-8\")).digest() for i, s in enumerate(sentences)]",
             ("tests/text/test_run.py",)),
    Mutation("text: embedding cache ignores the model", "flowkit_text/encoder.py",
             "WHERE model = ? AND text IN", "WHERE ? IS NOT NULL AND text IN",
             ("tests/text/test_encoder.py",)),
]


def project_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return [f for f in listed if (ROOT / f).is_file()]


def copy_project(target: Path) -> None:
    for name in project_files():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target / name)


def run_tests(copy: Path, tests: tuple[str, ...], env: dict[str, str]) -> tuple[bool, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                          cwd=copy, env=env, capture_output=True, text=True, timeout=1800)
    return done.returncode == 0, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only mutations whose name contains this")
    parser.add_argument("--json", default=str(ROOT / "out" / "mutate.json"))
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if args.k in m.name]
    data = Path(os.environ.get("FLOWKIT_DATA", ROOT.parent / "shared" / "data"))
    with tempfile.TemporaryDirectory(prefix="flowkit-mutate-") as scratch:
        copy = Path(scratch)
        copy_project(copy)
        env = {**os.environ, "PYTHONPATH": str(copy), "FLOWKIT_DATA": str(data), "OMP_NUM_THREADS": "2"}
        where = subprocess.run([sys.executable, "-c", "import flowkit; print(flowkit.__file__)"], cwd=copy, env=env,
                               capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(copy)):
            raise SystemExit(f"the scratch copy is not the flowkit the tests import ({where})")
        results = []
        for m in chosen:
            path = copy / m.file
            source = path.read_text()
            if source.count(m.original) != 1:
                raise SystemExit(f"mutation {m.name!r}: the snippet occurs {source.count(m.original)} times "
                                 f"in {m.file}")
            path.write_text(source.replace(m.original, m.mutated))
            try:
                passed, seconds = run_tests(copy, m.tests, env)
            finally:
                path.write_text(source)
            results.append({"mutation": m.name, "file": m.file, "tests": list(m.tests),
                            "outcome": "SURVIVED" if passed else "killed", "seconds": round(seconds, 1)})
            print(f"{results[-1]['outcome']:8}  {seconds:6.1f} s  {m.name}  ({', '.join(m.tests)})", flush=True)
    survivors = [r for r in results if r["outcome"] == "SURVIVED"]
    print(f"{len(results) - len(survivors)} killed, {len(survivors)} survived of {len(results)} mutations")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"results": results, "killed": len(results) - len(survivors),
                                           "survived": len(survivors)}, indent=2))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
