"""`expmatrix export JOB_DIR --onnx FILE`: a finished job's evaluated weights as an ONNX model, the tokenizer's
fitted state beside it, and a check that onnxruntime gives torch's outputs on the job's test events.

The exported graph is the model's one forward path with every token slot kept (`packed = False`: no
data-dependent shapes), inputs named as the tokenizer's tensors, batch and slot counts dynamic. The
tokenizer file holds what a user needs to make those tensors from raw events (preset, features, fitted state).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from expmatrix.assembly.fits import tokenizer_for
from expmatrix.assembly.parts import Assembly
from expmatrix.config import Job, SpecError
from expmatrix.data import Events
from expmatrix.paths import JobPaths
from expmatrix.runfiles import read_file, write_json
from expmatrix.store import RunStore
from expmatrix.tokenizers import Tokens
from expmatrix.tokenizers.base import take
from expmatrix.tokenizers.blocks import BlockTokens
from expmatrix.tokenizers.ragged import Ragged
from expmatrix.training.trainer import Trainer, outputs

TOLERANCE = 1e-4  # max abs difference between onnxruntime's and torch's outputs accepted


class Inputs(nn.Module):
    """The model with positional tensor inputs (ONNX has no dict inputs), in `names` order."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.names, tensors, strict=True)))


def evaluated_model(job: Job, store: RunStore) -> tuple[nn.Module, Assembly]:
    """The job's model with the weights its metrics were computed with (last or best, EMA or not: the trainer
    decides, from the finished checkpoint), and the job's parts with the tokenizer state of its run directory."""
    tokenizer = tokenizer_for(job.config)
    tokenizer.load_state_dict(read_file(store.job(job.id).tokenizer, job.id))
    parts = Assembly(job, store, "cpu", tokenizer)
    model = parts.model()
    trainer = Trainer(model, job.config.train.model_copy(update={"compile": False}), "cpu",
                      len(parts.splits["train"]), job.config.seed)  # fmt: skip
    trainer.load_evaluated(store.job(job.id).checkpoint)
    return model.eval(), parts


def trim(tokens: Tokens, slots: int, n_objects: int) -> Tokens:
    """The events with their object slots cut to `slots` (real objects come first): a shorter sequence."""
    n_tokens = tokens["mask"].shape[1]
    cut = {n_tokens: n_tokens - n_objects + slots, n_objects: slots}
    return {k: v[:, : cut[v.shape[1]]] if v.dim() > 1 and v.shape[1] in cut else v for k, v in tokens.items()}


def export_onnx(model: nn.Module, example: Tokens, path: Path) -> None:
    """Write the ONNX graph (torch.export): the event dim and the slot dim of every tensor are dynamic."""
    names = sorted(example)
    auto = torch.export.Dim.AUTO  # torch.export finds which dims are equal (tokens = objects + globals)
    dims = tuple({0: auto, **({1: auto} if example[k].dim() > 1 else {})} for k in names)
    model.packed = False  # every slot: shapes that do not depend on the data
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        args = tuple(example[k] for k in names)
        torch.onnx.export(Inputs(model, names).eval(), args, str(path), input_names=names, output_names=["output"],
                          dynamic_shapes=(dims,), dynamo=True, external_data=False)  # fmt: skip
    finally:
        model.packed = None


def session(path: Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def max_difference(model: nn.Module, path: Path, tokens: Tokens) -> float:
    """Max |onnxruntime - torch| over the events (torch through its usual forward path). A tensor the model
    does not read (`ids` without object-type embeddings) is not an input of the graph."""
    run = session(path)
    got = run.run(["output"], {i.name: tokens[i.name].numpy() for i in run.get_inputs()})[0]
    return float(np.abs(got - outputs(model, tokens).numpy()).max())


def export_job(job_dir: str | Path, onnx_file: str | Path) -> dict[str, Any]:
    """Export the finished job in `job_dir` to `onnx_file` (+ `<stem>.tokenizer.json`), check it on the test
    events (padded as stored, and cut to fewer slots); returns the figures."""
    store, job = RunStore.for_job_file(JobPaths(Path(job_dir)).record)
    job_id, state = job.id, store.state(job.id)
    if job.config.model.kind == "hierarchical":
        raise SpecError(f"job {job_id}: model.kind hierarchical has no ONNX export: grouping pulses by sensor "
                        "(torch.unique) gives data-dependent shapes, which torch.export cannot trace")  # fmt: skip
    if state != "done":
        raise SpecError(f"job {job_id} is not finished (state {state}): only a done job has evaluated weights")
    model, parts = evaluated_model(job, store)
    test, split, path = parts.tokens["test"], parts.splits["test"], Path(onnx_file)
    if isinstance(test, BlockTokens):  # a job that streams its splits: checked on the first block of test events
        test = test.block(0)
    if isinstance(test["mask"], Ragged):  # every pulse of a ragged file: padded to the longest test event
        test = take(test, slice(None))
    padded = isinstance(split, Events) and split.offsets is None
    n_objects = split.ids.shape[1] if padded else test["mask"].shape[1]  # (pulses: no global tokens)
    export_onnx(model, {k: v[:3] for k, v in test.items()}, path)
    longest = int(test["mask"].sum(1).max()) - (test["mask"].shape[1] - n_objects)  # real objects of the longest
    diffs = {"test": max_difference(model, path, test),
             "test_cut": max_difference(model, path, trim(test, max(1, longest), n_objects))}  # fmt: skip
    side = path.with_suffix(".tokenizer.json")
    inputs = {i.name: {"type": i.type, "shape": i.shape} for i in session(path).get_inputs()}
    write_json(side, {"job": job_id, "tokenizer": job.config.tokenizer.model_dump(mode="json"),
                      "features": parts.recipe.features, "use_met": parts.recipe.use_met,
                      "state": parts.tokenizer.state_dict(), "inputs": inputs,
                      "loss": job.config.train.loss})  # fmt: skip
    if max(diffs.values()) > TOLERANCE:
        raise SpecError(f"{path}: onnxruntime differs from torch by {max(diffs.values()):.2e} (> {TOLERANCE})")
    return {"job": job_id, "onnx": str(path), "tokenizer": str(side), "events": len(test["mask"]),
            "max_abs_diff": diffs}  # fmt: skip
