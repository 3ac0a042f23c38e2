"""`data bin` on a raw file larger than the address space the process may use.

Writes a raw 4tops file of ``--rows`` training rows (default 3M: 1.1 GB, float32 x 92) by
repeating a synthetic block, then runs ``expmatrix data bin`` in a subprocess under
``RLIMIT_AS`` (default 1 GiB; importing torch alone takes ~600 MiB of address space) and
prints the file size, the limit, the wall time and the subprocess's peak resident memory.
The edges are fitted exactly (two streaming passes over the training split).

    python benchmarks/bin_memory.py [--rows 3000000] [--limit-mib 1024] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from expmatrix.data.synthetic import generate

BLOCK = 20_000
PRESETS = Path(__file__).resolve().parents[1] / "tokenizers"


def write_raw(path: Path, rows: int) -> None:
    x, y = generate(BLOCK, seed=0)
    with h5py.File(path, "w") as f:
        for split, n in (("train", rows), ("val", BLOCK), ("test", BLOCK)):
            xs = f.create_dataset(f"X_{split}", (n, 92), np.float32, chunks=(BLOCK, 92))
            ys = f.create_dataset("Y_train" if split == "train" else f"y_{split}", (n,), np.float32)
            for s in range(0, n, BLOCK):
                xs[s : s + BLOCK], ys[s : s + BLOCK] = x[: n - s], y[: n - s]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--limit-mib", type=int, default=1024)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(dir=args.dir))
    raw, out = folder / "raw.h5", folder / "binned.h5"
    write_raw(raw, args.rows)
    limit = args.limit_mib << 20
    code = (
        f"import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
        "from expmatrix.cli import main; main(['data', 'bin', '--input', sys.argv[1], '--output', sys.argv[2], "
        "'--presets', sys.argv[3]])"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    t = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", code, str(raw), str(out), str(PRESETS)], env=env, text=True,
                         capture_output=True)  # fmt: skip
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"raw file          {raw.stat().st_size / 2**20:9.0f} MiB ({args.rows} training rows)")
    print(f"address-space cap {args.limit_mib:9d} MiB")
    state = "completed" if run.returncode == 0 else "FAILED"
    print(f"data bin          {state} in {wall:.1f} s, peak RSS {peak:.0f} MiB")
    if run.returncode:
        print(run.stderr[-3000:])
    else:
        with h5py.File(out) as f:
            print(f"binned file       {out.stat().st_size / 2**20:9.0f} MiB, X_train {f['X_train'].shape}")
    for p in (raw, out):
        p.unlink(missing_ok=True)
    folder.rmdir()
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
