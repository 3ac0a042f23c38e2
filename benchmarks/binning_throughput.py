"""Joint (Ambre) binning vs scikit-learn's KBinsDiscretizer on the same arrays, in the same run.

1M synthetic events x 18 object slots (4-vector + MET). Ours: `BinnedTokenizer.fit` (exact
equal-frequency edges of pT, eta and MET over the real objects/events) and `.transform`
(joint tokens of every slot, MET and MET-phi tokens, the mask). scikit-learn:
``KBinsDiscretizer(n_bins=5, encode="ordinal", strategy="quantile")`` fitted on the real
objects' (pT, eta) and transforming every slot's (pT, eta) (less work than our tokens, which also
bin phi and add the type and the MET tokens); with its default
``subsample=200_000`` (approximate edges) and with ``subsample=None`` (exact, like ours).
Best of `--repeat` runs, single thread.

    python benchmarks/binning_throughput.py [--events 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from sklearn.preprocessing import KBinsDiscretizer  # noqa: E402

import expmatrix.data  # noqa: E402, F401
from expmatrix.data.events import Events  # noqa: E402
from expmatrix.data.fourtops import split_columns  # noqa: E402
from expmatrix.data.synthetic import generate  # noqa: E402
from expmatrix.spec import BinnedTokenizerConfig  # noqa: E402
from expmatrix.tokenizers import build_tokenizer  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    x, y = generate(args.events, seed=0)
    ids, cont, g = split_columns(x, [1, 2, 3], True, "GeV")
    events = Events(ids, cont, g, (y == 1).astype(np.int64), y.astype(np.int64), ("pT", "eta", "phi"))
    real = events.real
    slots, n_real = real.size, int(real.sum())
    fit_x = np.ascontiguousarray(np.stack([cont[..., 0][real], cont[..., 1][real]], axis=1))  # (n_real, 2)
    all_x = np.ascontiguousarray(cont.reshape(-1, 3)[:, :2])  # (N * 18, 2): every slot's pT, eta
    tok = build_tokenizer(BinnedTokenizerConfig(kind="binned", name="binned_ambre5"), events.feature_names, True)

    rows = []
    ours_fit = best(lambda: tok.fit(events), args.repeat)
    ours_tr = best(lambda: tok.transform(events), args.repeat)
    rows.append(("ours (exact edges)", ours_fit, ours_tr))
    for sub in (200_000, None):
        kb = KBinsDiscretizer(n_bins=5, encode="ordinal", strategy="quantile", subsample=sub)
        fit = best(lambda kb=kb: kb.fit(fit_x), args.repeat)
        tr = best(lambda kb=kb: kb.transform(all_x), args.repeat)
        rows.append((f"sklearn subsample={sub}", fit, tr))

    print(f"{args.events} events x 18 slots = {slots / 1e6:.1f} M slots, {n_real / 1e6:.2f} M real objects")
    print(f"{'':28s} {'fit s':>8s} {'fit M obj/s':>12s} {'transform s':>12s} {'transform M slots/s':>20s}")
    for name, fit, tr in rows:
        print(f"{name:28s} {fit:8.3f} {n_real / fit / 1e6:12.1f} {tr:12.3f} {slots / tr / 1e6:20.1f}")
    for name, fit, tr in rows[1:]:
        print(f"ours vs {name}: fit {fit / ours_fit:.1f}x faster, transform {tr / ours_tr:.1f}x faster")


if __name__ == "__main__":
    main()
