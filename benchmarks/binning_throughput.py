"""Joint (Ambre) binning vs scikit-learn's KBinsDiscretizer on the same arrays, in the same run.

1M synthetic events x 18 object slots (4-vector + MET). Ours: `BinnedTokenizer.fit` (exact
equal-frequency edges of pT, eta and MET over the real objects/events) and `.transform`
(joint tokens of every slot, MET and MET-phi tokens, the mask). scikit-learn:
``KBinsDiscretizer(n_bins=5, encode="ordinal", strategy="quantile")`` fitted on the real
objects' (pT, eta) and transforming every slot's (pT, eta) (the issue's reference: less work than
our tokens, which also bin phi and add the type and the MET tokens); with its default
``subsample=200_000`` (approximate edges) and with ``subsample=None`` (exact, like ours); and on
the three features our tokens bin (pT, eta, phi). scikit-learn runs on one thread (it has no
other); ours on 1 thread and on `--threads` (the compiled kernels of `tokenizers/native.c` and numpy
release the GIL: chunks run in parallel), and its numpy fallback path (no C compiler) on 1 thread.
Best of `--repeat` runs.

    python benchmarks/binning_throughput.py [--events 1000000] [--repeat 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.preprocessing import KBinsDiscretizer  # noqa: E402
from timing import best  # noqa: E402  (benchmarks/timing.py, beside this script)

import expmatrix.data  # noqa: E402, F401
from expmatrix.config import BinnedTokenizerConfig  # noqa: E402
from expmatrix.data.events import Events  # noqa: E402
from expmatrix.data.fourtops import split_columns  # noqa: E402
from expmatrix.data.synthetic import generate  # noqa: E402
from expmatrix.tokenizers import build_tokenizer, native  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    x, y = generate(args.events, seed=0)
    ids, cont, g = split_columns(x, [1, 2, 3], True, "GeV")
    events = Events(ids, cont, g, (y == 1).astype(np.int64), y.astype(np.int64), ("pT", "eta", "phi"))
    real = events.real
    slots, n_real = real.size, int(real.sum())
    fit_x = np.ascontiguousarray(np.stack([cont[..., 0][real], cont[..., 1][real]], axis=1))  # (n_real, 2)
    all_x = np.ascontiguousarray(cont.reshape(-1, 3)[:, :2])  # (N * 18, 2): every slot's pT, eta
    fit_x3 = np.ascontiguousarray(cont[real])  # (n_real, 3): pT, eta, phi
    all_x3 = np.ascontiguousarray(cont.reshape(-1, 3))
    tok = build_tokenizer(BinnedTokenizerConfig(kind="binned", name="binned_ambre5"), events.feature_names, True)

    rows = []
    for path, threads in [("compiled", n) for n in sorted({1, args.threads})] + [("numpy", 1)]:
        os.environ["EXPMATRIX_NATIVE"] = "1" if path == "compiled" else "0"
        native.lib.cache_clear()
        if path == "compiled" and native.lib() is None:
            raise SystemExit("the binning kernels did not compile (see the warning above)")
        torch.set_num_threads(threads)
        rows.append((f"ours {path}, {threads} thread{'s' * (threads > 1)}", best(lambda: tok.fit(events), args.repeat),
                     best(lambda: tok.transform(events), args.repeat)))  # fmt: skip
    for sub, fx, ax, what in ((200_000, fit_x, all_x, "pT,eta"), (None, fit_x, all_x, "pT,eta"),
                              (None, fit_x3, all_x3, "pT,eta,phi")):  # fmt: skip
        kb = KBinsDiscretizer(n_bins=5, encode="ordinal", strategy="quantile", subsample=sub)
        fit = best(lambda kb=kb, fx=fx: kb.fit(fx), args.repeat)
        tr = best(lambda kb=kb, ax=ax: kb.transform(ax), args.repeat)
        rows.append((f"sklearn {what} subsample={sub}", fit, tr))
    ours = [r for r in rows if r[0].startswith("ours")]
    print(f"{args.events} events x 18 slots = {slots / 1e6:.1f} M slots, {n_real / 1e6:.2f} M real objects")
    print(f"{'':36s} {'fit s':>8s} {'fit M obj/s':>12s} {'transform s':>12s} {'transform M slots/s':>20s}")
    for name, fit, tr in rows:
        print(f"{name:36s} {fit:8.3f} {n_real / fit / 1e6:12.1f} {tr:12.3f} {slots / tr / 1e6:20.1f}")
    for name, fit, tr in rows[len(ours) :]:
        for mine, ours_fit, ours_tr in ours:
            print(f"{mine} vs {name}: fit {fit / ours_fit:.1f}x, transform {tr / ours_tr:.1f}x faster")


if __name__ == "__main__":
    main()
