"""Training throughput of the flagship model vs a plain torch TransformerEncoder, same run.

Both models (direct tokenizer, 5-vector + MET, the thesis 400k budget, 8 layers, 8 heads,
mean pooling) are trained by the same `Trainer` (AdamW, clipping) on the same batches; the
reference is `torch.nn.TransformerEncoder` (pre-LN) at the same width, FFN width and depth.
Rounds alternate between the two models and the median is reported, so that a busy machine
slows both alike. Printed per model: events/s, GFLOP/s actually executed (GEMMs counted by
`torch.utils.flop_counter`, attention counted analytically as 3x its forward), and that as
a fraction of this machine's fp32 matmul peak (the best of square matmuls timed between rounds). On CUDA also bf16
autocast and `--compile`.

    python benchmarks/train_throughput.py [--batch 512] [--steps 20] [--rounds 3] [--threads N] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from expmatrix.config import DataConfig, DirectTokenizerConfig, ModelConfig, TrainConfig
from expmatrix.data import load_splits
from expmatrix.layers.packing import Packing
from expmatrix.models.sizing import build_model, solve_size
from expmatrix.models.transformer import Transformer, trainable_params
from expmatrix.tokenizers import build_tokenizer
from expmatrix.tokenizers.base import to_device
from expmatrix.training.trainer import Trainer


class PlainEncoder(nn.Module):
    """The reference: the same input layer, torch's own encoder, mean pooling."""

    def __init__(self, embed: nn.Module, d: int, f: int, layers: int, heads: int):
        super().__init__()
        self.embed = embed
        layer = nn.TransformerEncoderLayer(d, heads, f, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, 2)

    def forward(self, tokens):
        h, mask = self.embed(tokens)
        h = self.encoder(h, src_key_padding_mask=~mask)
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1))


def matmul_peak_gflops(device: torch.device, dtype=torch.float32) -> float:
    """Best GFLOP/s of square matmuls (1024, 2048) on this device and thread count."""
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(4):
                a @ b
            _sync(device)
            best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def attention_flops(mask: torch.Tensor, packed: bool, d_model: int, layers: int) -> float:
    """Training FLOPs of attention (QK^T and AV, forward + 2x backward) over the rectangles it computes."""
    shapes = [(b, n) for b, n, _ in Packing(mask, packed).buckets]
    return 3 * layers * sum(2 * 2 * b * n * n * d_model for b, n in shapes)


def step_flops(model: nn.Module, x, y, batch: int, d_model: int, layers: int, compiled: bool, steps: int = 2) -> float:
    """Mean training FLOPs per step as executed, counted in eager mode. The expmatrix model packs real
    tokens on CPU, except when compiled (static shapes): then its padded FLOPs are counted."""
    packed = isinstance(model, Transformer) and y.device.type == "cpu" and not compiled
    if isinstance(model, Transformer):
        model.packed = packed
    trainer = Trainer(model, TrainConfig(batch_size=batch, warmup_steps=0, class_weights="none"), y.device, len(y))
    total = 0.0
    for i in range(steps):
        idx = torch.arange(i * batch, (i + 1) * batch, device=y.device) % len(y)
        with FlopCounterMode(display=False) as counter:
            trainer.train_step(x, y, idx)
        total += counter.get_total_flops() + attention_flops(x["mask"][idx], packed, d_model, layers)
    if isinstance(model, Transformer):
        model.packed = None
    return total / steps


def events_per_second(trainer: Trainer, x, y, batch: int, steps: int, start: int) -> float:
    n, dev = len(y), y.device
    idx = [torch.arange((start + i) * batch, (start + i + 1) * batch, device=dev) % n for i in range(steps)]
    _sync(dev)
    t0 = time.perf_counter()
    for i in idx:
        trainer.train_step(x, y, i)
    _sync(dev)
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="also torch.compile both models")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = DataConfig(cont_features=[0, 1, 2, 3], synthetic={"events": args.events, "seed": 0})
    with tempfile.TemporaryDirectory() as tmp:
        train = load_splits(cfg, "synthetic", Path(tmp))["train"]
    tok = build_tokenizer(DirectTokenizerConfig(kind="direct", name="direct"), train.feature_names, True)
    tok.fit(train)
    x, y = to_device(tok.transform(train), device), torch.from_numpy(train.label).to(device)
    seq = x["mask"].shape[1]
    mcfg = ModelConfig(target_params=400_000, pooling="mean")
    size = solve_size(tok, mcfg, 2, seq)
    models = {
        "expmatrix": build_model(tok, mcfg, size, 2, seq).to(device),
        "torch TransformerEncoder": PlainEncoder(
            tok.embedding(size.d_model), size.d_model, size.d_ff, mcfg.layers, mcfg.heads
        ).to(device),
    }
    peak = matmul_peak_gflops(device)
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, sequence {seq} tokens, "
          f"{x['mask'].float().mean():.0%} of them real")
    print(f"width {size.d_model}, FFN {size.d_ff}; params: "
          + ", ".join(f"{k} {trainable_params(m):,}" for k, m in models.items()))
    modes = [("fp32", {"amp": "off"})]
    if device.type == "cuda":
        modes.append(("bf16", {"amp": "bf16"}))
    if args.compile:
        modes += [(f"{name}+compile", {**m, "compile": True}) for name, m in modes]
    for mode, extra in modes:
        tcfg = TrainConfig(batch_size=args.batch, warmup_steps=0, class_weights="none", **extra)
        trainers = {k: Trainer(m, tcfg, device, len(y)) for k, m in models.items()}
        rates = {k: [] for k in trainers}
        for t in trainers.values():
            events_per_second(t, x, y, args.batch, 3, 0)  # warm-up (and compilation)
        compiled = extra.get("compile", False)
        flops = {k: step_flops(m, x, y, args.batch, size.d_model, mcfg.layers, compiled) for k, m in models.items()}
        flops = {k: f / args.batch for k, f in flops.items()}  # per event
        for r in range(args.rounds):
            for k, t in trainers.items():
                rates[k].append(events_per_second(t, x, y, args.batch, args.steps, 3 + r * args.steps))
            peak = max(peak, matmul_peak_gflops(device))  # the best seen: a busy moment understates the peak
        med = {k: statistics.median(v) for k, v in rates.items()}
        for k in trainers:
            gflops = flops[k] * med[k] / 1e9
            runs = ", ".join(f"{r:,.0f}" for r in rates[k])
            print(f"{mode:>13} {k:<25} {med[k]:>7,.0f} events/s (rounds: {runs})  {flops[k] / 1e6:5.2f} MFLOP/event  "
                  f"{gflops:6.1f} GFLOP/s = {gflops / peak:.0%} of peak")
        print(f"{mode:>13} fp32 matmul peak, best of {args.rounds + 1} timings in this run: {peak:.1f} GFLOP/s")
        a, b = med.values()
        print(f"{mode:>13} ratio expmatrix / reference: {a / b:.2f}x events/s")


if __name__ == "__main__":
    main()
