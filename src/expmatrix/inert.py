"""Settings with no effect are errors, before anything runs.

The research code this replaces swept settings nobody read and trained identical models
under different labels. Here every key an experiment sets must be read by the code that
builds the job: the data selection, the tokenizer, the model (on the meta device) and the
trainer are constructed with a config that records its reads, and a set key that was not
read is reported with where it was set.
"""

from __future__ import annotations

from typing import Any

import torch

from expmatrix.assembly.fits import tokenizer_for
from expmatrix.config import JobConfig, SpecError, n_outputs, record_reads, short_hash
from expmatrix.data import data_selection, stream_block
from expmatrix.matrix import Matrix
from expmatrix.models.sizing import build_model, solve_size
from expmatrix.pretraining import pretrain_settings
from expmatrix.provenance import code_version
from expmatrix.runfiles import DamagedFile, read_file, set_aside, write_json
from expmatrix.store import RunStore
from expmatrix.training.trainer import Trainer


def consumed_keys(cfg: JobConfig) -> set[str]:
    """The dotted keys of `cfg` that building this job reads (no data, no training)."""
    with record_reads(cfg) as reads:
        _ = cfg.seed
        data_selection(cfg.data)
        stream_block(cfg.data)
        tokenizer = tokenizer_for(cfg)
        outputs = n_outputs(cfg.data)
        size = solve_size(tokenizer, cfg.model, outputs)
        with torch.device("meta"):
            model = build_model(tokenizer, cfg.model, size, outputs)
        Trainer(model, cfg.train, "cpu", n_train=max(1000, cfg.train.batch_size), seed=cfg.seed)  # >= one batch
        pretrain_settings(cfg)  # model.init, and the pretraining settings where it is pretrained
    return reads


def _shape(value: Any) -> Any:
    """The config with numbers replaced by their type: cells that differ only in numbers read the same keys."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return type(value).__name__
    return value


def _is_read(key: str, reads: set[str]) -> bool:
    if key in reads or (key.endswith(".kind") and key.removesuffix(".kind") + "#" in reads) or key + "#" in reads:
        return True
    return any(key.startswith(r + ".") for r in reads if not r.endswith("#"))


def unread(settings: dict[str, str], reads: set[str]) -> list[str]:
    """Where each set key that nothing read was set."""
    return [where for key, where in settings.items() if not _is_read(key, reads)]


def cached_reads(cfg: JobConfig, store: RunStore) -> set[str]:
    """The keys a config shape reads, cached per shape and code version (`CachePaths.consumed`)."""
    path = store.paths.cache.consumed(short_hash([_shape(cfg.model_dump(mode="json")), code_version()]))
    try:
        return set(read_file(path))
    except FileNotFoundError:
        pass
    except DamagedFile:
        set_aside(path)  # a cache: compute it again
    reads = consumed_keys(cfg)
    write_json(path, sorted(reads))
    return reads


def unused_pretrain(matrix: Matrix) -> list[str]:
    """`pretrain` settings in a matrix without a pretrained job would do nothing anywhere."""
    if any(job.config.model.init == "pretrained" for job in matrix.jobs):
        return []
    return [f"  {where}  (no job has model.init: pretrained)" for cell in matrix.settings.values()
            for key, where in cell.items() if key.split(".")[0] == "pretrain"][:1]  # fmt: skip


def check_consumed(matrix: Matrix, store: RunStore) -> None:
    """SpecError listing every setting that has no effect in some cell."""
    cache: dict[str, set[str]] = {}
    problems: list[str] = []
    for cell, job in {j.cell: j for j in matrix.jobs}.items():
        resolved = job.config.model_dump(mode="json")
        shape = short_hash(_shape(resolved))
        if shape not in cache:
            cache[shape] = cached_reads(job.config, store)
        levels = ", ".join(f"{k}={v}" for k, v in job.levels.items()) or "the only cell"
        # a section the job leaves out of its config is not its setting (`pretrain` in a scratch cell)
        own = {k: w for k, w in matrix.settings.get(cell, {}).items() if k.split(".")[0] in resolved}
        problems += [f"  {where}  (in cell {levels})" for where in unread(own, cache[shape])]
    problems += unused_pretrain(matrix)
    if problems:
        shown = "\n".join(problems[:10]) + (f"\n  ... {len(problems) - 10} more" if len(problems) > 10 else "")
        raise SpecError(
            f"{matrix.path}: settings that have no effect (nothing reads them there; the jobs would train "
            f"the same model under another label). Remove them or restrict them to where they matter:\n{shown}"
        )
