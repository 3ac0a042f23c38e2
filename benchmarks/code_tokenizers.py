"""The code tokenizers (kmeans, fsq, vqvae) against `direct` and the joint binning, in the same run.

Synthetic 4tops events (4-vector + MET), one torch thread. For each preset of `tokenizers/`: the fit on
the training split (for vqvae512 its pretraining, with the preset's epochs) and the transform of every
split, as events per second and as a ratio to `direct` (the reference: the cheapest tokens). For the
VQ-VAE it also times the quantizer's own forward (vector-quantize-pytorch) against the nearest-code
lookup its tokens use, on the same latents. Best of `--repeat` transforms.

    python benchmarks/code_tokenizers.py [--events 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from timing import best  # noqa: E402  (benchmarks/timing.py, beside this script)

from expmatrix.config import DataConfig, load_preset  # noqa: E402
from expmatrix.data import load_splits  # noqa: E402
from expmatrix.tokenizers import build_tokenizer  # noqa: E402

PRESETS = ["direct", "binned_ambre5", "kmeans512", "fsq512", "vqvae512"]
FEATURES = ("pT", "eta", "phi")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = DataConfig(synthetic={"events": args.events, "seed": 0})
        splits = load_splits(cfg, "synthetic", Path(tmp))
    train, n = splits["train"], sum(len(s) for s in splits.values())
    print(f"{args.events} events ({len(train)} training), 4-vector + MET, 1 thread, best of {args.repeat}")
    rows, reference = [], None
    for name in PRESETS:
        tok = build_tokenizer(load_preset(name, "tokenizers"), FEATURES, True)
        fit = best(lambda tok=tok: tok.fit(train), 1)
        seconds = best(lambda tok=tok: [tok.transform(s) for s in splits.values()], args.repeat)
        reference = reference or seconds
        rows.append((name, fit, n / seconds, reference / seconds))
    print(f"{'preset':<15}{'fit s':>9}{'transform ev/s':>17}{'vs direct':>11}")
    for name, fit, rate, ratio in rows:
        print(f"{name:<15}{fit:>9.2f}{rate:>17,.0f}{ratio:>10.2f}x")
    model = tok.model  # the last one: vqvae512
    x = torch.from_numpy(tok.normalized(train))
    z = model.encode(x, torch.from_numpy(train.ids), torch.from_numpy(train.real))
    with torch.no_grad():
        forward = best(lambda: model.quantize(z), args.repeat)
        lookup = best(lambda: model.lookup(z), args.repeat)
    same = bool(torch.equal(model.quantize(z)[1], model.lookup(z)[1]))
    print(f"vqvae512 codes of {len(z):,} objects: quantizer forward {forward * 1e3:.0f} ms, nearest-code lookup "
          f"{lookup * 1e3:.0f} ms ({forward / lookup:.1f}x faster; the same codes: {same})")


if __name__ == "__main__":
    main()
