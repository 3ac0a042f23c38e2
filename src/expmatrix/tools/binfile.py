"""`expmatrix data bin`: a raw 4tops file -> the binned data set in the thesis layout, streamed in chunks.

Output: ``X_train``, ``X_val``, ``X_test`` as [N, 20] int64 (18 object tokens, then the MET and
MET-phi tokens: the thesis column order), the labels copied under the input's label names, and
as HDF5 attributes the preset (``tokenizer``), the fitted bin edges (``state``), the column
layout and the vocabulary. The edges are fitted on the training split only, exactly, in two
streaming passes; memory stays bounded by the chunk size whatever the file size.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from expmatrix.config.layout import CONT_NAMES, N_COLUMNS, N_OBJECTS, PROCESSES, SPLITS
from expmatrix.data.events import Events
from expmatrix.data.fourtops import DataError, dataset, split_columns
from expmatrix.tokenizers import build_tokenizer
from expmatrix.tokenizers.binned import BinnedTokenizer

CHUNK_ROWS = 1 << 15
COLUMNS = "object tokens of slots 0-17, then MET (column 18) and MET-phi (column 19); 0 = empty slot"


def chunk_events(
    path: Path, x_key: str, y_key: str, *, cont_features: list[int], background: list[int], unit: str, rows: int
) -> Iterator[Events]:
    """Events of one split, `rows` at a time; label 0 marks the background processes (for fit_on)."""
    with h5py.File(path, "r") as f:
        x_ds, y_ds = dataset(f, path, x_key), dataset(f, path, y_key)
        if x_ds.ndim != 2 or x_ds.shape[1] != N_COLUMNS or y_ds.shape != (x_ds.shape[0],):
            raise DataError(f"{path}: {x_key!r} {x_ds.shape} / {y_key!r} {y_ds.shape}: expected (N, {N_COLUMNS}), (N,)")
        for start in range(0, len(x_ds), rows):
            x = x_ds[start : start + rows].astype(np.float32, copy=False)
            y = y_ds[start : start + rows]
            bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
            if len(bad):
                raise DataError(f"{path}: dataset {x_key!r} has NaN/inf in row {start + bad[0]}")
            if not np.isin(y, list(PROCESSES)).all():
                found = np.unique(y)[:10]
                raise DataError(f"{path}: dataset {y_key!r} holds labels {found}; expected {list(PROCESSES)}")
            ids, cont, globals_ = split_columns(x, cont_features, True, unit)
            process = y.astype(np.int64)
            label = (~np.isin(process, background)).astype(np.int64)
            yield Events(ids, cont, globals_, label, process, tuple(CONT_NAMES[i] for i in cont_features))


def bin_file(
    source: str | Path,
    output: str | Path,
    config,
    *,
    cont_features: list[int],
    keys: dict[str, str],
    background: list[int],
    unit: str = "GeV",
    rows: int = CHUNK_ROWS,
    progress: bool = True,
) -> dict:
    """Fit the joint binning on the training split of `source` and write every split binned to `output`."""
    source, output = Path(source), Path(output)
    if not source.exists():
        raise DataError(f"{source}: data file not found")
    names = tuple(CONT_NAMES[i] for i in cont_features)
    tok = build_tokenizer(config, names, use_met=True)
    if not isinstance(tok, BinnedTokenizer):
        raise DataError(f"data bin writes joint tokens: tokenizer {config.name!r} is {config.kind!r}, not 'binned'")
    opts = dict(cont_features=cont_features, background=background, unit=unit, rows=rows)

    def chunks(split: str) -> Iterator[Events]:
        return chunk_events(source, keys[f"x_{split}"], keys[f"y_{split}"], **opts)

    with h5py.File(source, "r") as f:
        sizes = {s: len(dataset(f, source, keys[f"x_{s}"])) for s in SPLITS}
    tok.fit_stream(lambda: chunks("train"), sizes["train"] * N_OBJECTS)
    report = {"rows": sizes, "vocab_size": tok.vocab_size, "out_of_range": {}, "state": tok.state_dict()}
    tmp = output.with_name(f".{output.name}.tmp")
    output.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(tmp, "w") as out, tqdm(total=sum(sizes.values()), unit="ev", disable=not progress) as bar:
        for split in SPLITS:
            with h5py.File(source, "r") as f:
                y_dtype = f[keys[f"y_{split}"]].dtype
            shape = (sizes[split], N_OBJECTS + 2)
            chunk = (max(1, min(rows, 8192, shape[0])), shape[1])
            x_ds = out.create_dataset(f"X_{split}", shape, np.int64, chunks=chunk)
            y_ds = out.create_dataset(keys[f"y_{split}"], (sizes[split],), y_dtype)
            start, counts = 0, {}
            for events in chunks(split):
                x_ds[start : start + len(events)] = tok.thesis_rows(events)
                y_ds[start : start + len(events)] = events.process
                for f, n in tok.out_of_range.items():
                    counts[f] = counts.get(f, 0) + n
                start += len(events)
                bar.update(len(events))
            report["out_of_range"][split] = counts
        out.attrs.update(
            {
                "tokenizer": config.model_dump_json(),
                "state": json.dumps(tok.state_dict()),
                "features": json.dumps(list(names)),
                "columns": COLUMNS,
                "vocab_size": tok.vocab_size,
                "source": str(source),
                "fitted_on": f"{keys['x_train']} (training split), fit_on={tok.binner.fit_on}",
            }
        )
    tmp.replace(output)
    return report
