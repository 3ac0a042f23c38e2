"""Training throughput of the flagship model vs a plain torch TransformerEncoder, same run.

Prints events/s for the expmatrix model (direct tokenizer, 5-vector + MET, the
thesis 400k budget) and for `torch.nn.TransformerEncoder` at the same width, FFN,
depth and batch, and their ratio. On CUDA also with bf16 autocast.

    python benchmarks/train_throughput.py [--batch 512] [--steps 30] [--events 20000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from expmatrix.data import load_splits
from expmatrix.models.sizing import build_model, solve_size
from expmatrix.spec import DataConfig, DirectTokenizerConfig, ModelConfig
from expmatrix.tokenizers import build_tokenizer
from expmatrix.training.trainer import take, to_device


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


def events_per_second(model, tokens, labels, batch, steps, autocast) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n = len(labels)
    dev = labels.device

    def step(i):
        idx = torch.arange(i * batch, (i + 1) * batch, device=dev) % n
        with autocast():
            loss = F.cross_entropy(model(take(tokens, idx)).float(), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(3):  # warm-up
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--events", type=int, default=20000)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = DataConfig(cont_features=[0, 1, 2, 3], synthetic={"events": args.events, "seed": 0})
    with tempfile.TemporaryDirectory() as tmp:
        train = load_splits(cfg, "synthetic", Path(tmp))["train"]
    tok = build_tokenizer(DirectTokenizerConfig(kind="direct", name="direct"), train.feature_names, True)
    tok.fit(train)
    tokens = to_device(tok.transform(train), device)
    labels = torch.from_numpy(train.label).to(device)
    mcfg = ModelConfig(target_params=400_000, pooling="mean")
    size = solve_size(tok, mcfg, 2)
    ours = build_model(tok, mcfg, size, 2).to(device)
    ref = PlainEncoder(tok.embedding(size.d_model), size.d_model, size.d_ff, mcfg.layers, mcfg.heads).to(device)
    count = lambda m: sum(q.numel() for q in m.parameters())  # noqa: E731
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, seq {tokens['mask'].shape[1]}")
    print(f"params: expmatrix {count(ours)}, reference {count(ref)} (width {size.d_model}, FFN {size.d_ff})")
    modes = [("fp32", nullcontext)]
    if device.type == "cuda":
        modes.append(("bf16", lambda: torch.autocast("cuda", dtype=torch.bfloat16)))
    for name, autocast in modes:
        a = events_per_second(ours, tokens, labels, args.batch, args.steps, autocast)
        b = events_per_second(ref, tokens, labels, args.batch, args.steps, autocast)
        print(f"{name}: expmatrix {a:,.0f} events/s   torch TransformerEncoder {b:,.0f} events/s   ratio {a / b:.2f}")


if __name__ == "__main__":
    main()
