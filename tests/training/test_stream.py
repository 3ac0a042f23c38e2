"""Jobs that stream their splits from the file block by block (`data.stream`): the same events, tokens and
training as in memory, each block read once per epoch, a bounded number held, and a resume that is bitwise."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from pydantic import ValidationError

from expmatrix.assembly.parts import Assembly
from expmatrix.checkpoint import block_order, epoch_order
from expmatrix.config import JobConfig, PulsesConfig
from expmatrix.config.pretrain import PretrainConfig
from expmatrix.data import StreamedSplit, data_selection
from expmatrix.data import pulses as pulses_module
from expmatrix.data.pulses import PulseReader, read_pulses
from expmatrix.matrix import build_matrix
from expmatrix.pretraining.loop import pretrain_events
from expmatrix.store import RunStore
from expmatrix.tokenizers.base import take
from expmatrix.tokenizers.blocks import KEEP, BlockTokens
from expmatrix.tokenizers.ragged import Ragged
from expmatrix.training.job import train_job
from expmatrix.training.trainer import Preempted, Trainer, outputs

pytestmark = pytest.mark.usefixtures("one_thread")
EXPERIMENT = REPO / "experiments" / "icecube_long_events.yaml"  # quick: 1,000 long events; 400 / 50 / 50 read


def _job(reader: str, block: int | None, fit: int = 100_000):
    stream = {"data.stream.block_events": block, "data.stream.fit_events": fit} if block else {}
    matrix = build_matrix(EXPERIMENT, "quick", overrides={"data.max_events": 400, **stream})
    return next(j for j in matrix.jobs if j.levels == {"reader": reader, "tokenizer": "direct_icecube"})


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> RunStore:
    return RunStore(tmp_path_factory.mktemp("stream"), "icecube_long_events")


def test_block_order_visits_every_event_once_block_after_block():
    order = block_order(10, 4, seed=3, epoch=1, device=torch.device("cpu"))
    assert sorted(order.tolist()) == list(range(10))
    blocks = (order // 4).tolist()
    assert [b for i, b in enumerate(blocks) if i == 0 or b != blocks[i - 1]] == sorted(set(blocks), key=blocks.index)
    assert len(set(blocks)) == 3 and order.tolist() == block_order(10, 4, 3, 1, torch.device("cpu")).tolist()
    assert torch.equal(block_order(10, 10, 3, 1, torch.device("cpu")), epoch_order(10, 3, 1, torch.device("cpu")))


@pytest.mark.parametrize("reader", ["hierarchical", "flat_L128_nonaux"])
def test_a_block_holds_those_events_of_the_split_read_at_once(store, reader):
    """Blocks of a streamed split, ragged (hierarchical) or padded (flat, the split's width), are its rows."""
    parts = Assembly(_job(reader, 150), store)
    streamed = parts.splits["val"]
    assert isinstance(streamed, StreamedSplit) and streamed.n_blocks == 1
    train = parts.splits["train"]
    assert (len(train), train.n_blocks) == (400, 3)
    whole = read_pulses(train.path, "train", parts.recipe.features, 0.5, parts.cfg.data.pulses,
                        sensors=reader == "hierarchical")  # fmt: skip
    block = train.block(1).padded()
    rows = slice(150, 300)
    width = block.cont.shape[1]
    assert np.array_equal(block.cont, whole.cont[rows, :width]) and not whole.cont[rows, width:].any()
    assert np.array_equal(block.target, whole.target[rows]) and np.array_equal(block.length, whole.length[rows])
    if reader != "hierarchical":
        assert width == train.slots == whole.cont.shape[1] == 128


@pytest.mark.parametrize("select", ["random", "nonaux_first"])
def test_a_pulse_selection_is_the_same_read_whole_or_in_blocks(store, select, monkeypatch):
    """Read in chunks of 7 events from event 5 on, the kept pulses of every event are the whole read's."""
    path = Assembly(_job("flat_L128_nonaux", 150), store).splits["train"].path
    pulses = PulsesConfig(max=20, select=select)
    whole = PulseReader(path, "train", ("time", "charge"), 0.5, pulses).read()
    monkeypatch.setattr(pulses_module, "CHUNK_EVENTS", 7)
    part = PulseReader(path, "train", ("time", "charge"), 0.5, pulses).read(5, 60)
    assert (whole.length[5:60] > 20).sum() > 10  # events that lose pulses
    assert np.array_equal(part.cont, whole.cont[5:60]) and np.array_equal(part.real, whole.real[5:60])


@pytest.mark.parametrize("reader", [pytest.param("hierarchical", marks=pytest.mark.slow), "flat_L128_nonaux"])
def test_a_job_streamed_in_one_block_equals_the_job_in_memory(store, reader):
    metrics = []
    for block in (None, 100_000):
        job = _job(reader, block)
        train_job(job, store)
        metrics.append(json.loads(store.job(job.id).metrics.read_text()))
    memory, streamed = metrics
    assert streamed["test"] == memory["test"] and streamed["val"] == memory["val"]
    assert streamed["events"] == memory["events"] == {"train": 400, "val": 50, "test": 50}


@pytest.mark.slow
def test_streamed_training_reads_each_block_once_an_epoch_and_resumes_bitwise(store, tmp_path):
    job = _job("hierarchical", 128)
    memory, parts = Assembly(_job("hierarchical", None), store), Assembly(job, store)
    assert parts.tokenizer.state_dict() == memory.tokenizer.state_dict()  # fitted on every training event
    x, mem = parts.tokens["train"], memory.tokens["train"]
    assert isinstance(x, BlockTokens) and x.n_blocks == 4 and parts.seq_len == memory.seq_len
    idx = torch.tensor([390, 3, 130, 129, 5])  # three blocks, out of order
    for key, value in take(x, idx).items():
        assert torch.equal(value, take(mem, idx)[key]), key
    y = parts.targets["train"]

    def trainer() -> Trainer:
        torch.manual_seed(0)
        return Trainer(parts.model(), job.config.train, "cpu", len(y), seed=1)

    whole, x.loads = trainer(), 0
    whole.fit((x, y), (parts.tokens["val"], parts.targets["val"]), tmp_path / "a.pt")
    epochs = job.config.train.epochs
    assert x.n_blocks <= x.loads <= x.n_blocks * epochs and len(x.held) <= KEEP

    first = trainer()
    stop = lambda epoch, done: (epoch, done) == (1, 6) and os.kill(os.getpid(), signal.SIGTERM)  # noqa: E731
    with pytest.raises(Preempted):
        first.fit((x, y), (parts.tokens["val"], parts.targets["val"]), tmp_path / "b.pt", on_batch=stop)
    again = Assembly(job, store)  # a new process would hold no block
    resumed = trainer()
    resumed.fit((again.tokens["train"], y), (again.tokens["val"], again.targets["val"]), tmp_path / "b.pt")
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(whole.history) == strip(resumed.history)
    for (key, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_stream_settings_are_checked_where_they_are_set():
    with pytest.raises(ValidationError, match=r"data\.stream\n.*data.source fourtops has objects"):
        JobConfig.model_validate({"data": {"stream": {"block_events": 64}}, "tokenizer": {"kind": "direct"}})
    cfg = _job("hierarchical", 256).config.model_dump()
    cfg["model"] |= {"init": "pretrained", "kind": "flat"}
    cfg["pretrain"] = {"mask_fraction": 0.2}
    with pytest.raises(ValidationError, match=r"data\.stream\n.*model.init pretrained reads its pretraining"):
        JobConfig.model_validate(cfg)
    hier = _job("hierarchical", 256).config.model_dump()
    with pytest.raises(ValidationError, match=r"data\.stream\.block_events\n.*below train.batch_size 32"):
        JobConfig.model_validate(hier | {"data": hier["data"] | {"stream": {"block_events": 16}}})
    with pytest.raises(ValidationError, match=r"train\.fixed_shape\n.*no effect in model.kind hierarchical"):
        JobConfig.model_validate(hier | {"train": hier["train"] | {"fixed_shape": "pad"}})
    random = PulsesConfig(max=20, select="random")
    assert data_selection(JobConfig.model_validate(hier).data.model_copy(update={"pulses": random}))["pulses"] == {
        "max": 20, "select": "random", "draw": "per-event"}  # fits cached under the earlier draw are not reused
    with pytest.raises(ValidationError, match=r"data\.stream\.block_events\n.*greater than or equal to 16"):
        JobConfig.model_validate(_job("hierarchical", 256).config.model_dump() | {"data": {
            "source": "icecube", "stream": {"block_events": 8}}})  # fmt: skip


def test_a_flat_job_on_every_pulse_of_a_ragged_file_holds_its_splits_ragged(store):
    """Unbounded by `data.pulses.max`, a ragged file's events stay ragged for the flat model too: memory holds
    pulses, not events x the longest event; the model's outputs are the padded events' (a batch is padded to
    its own longest event)."""
    job = _job("flat_L128_nonaux", None)
    every = job.config.model_copy(update={"data": job.config.data.model_copy(update={"pulses": PulsesConfig()})})
    parts = Assembly(dataclasses.replace(job, config=every), store)
    train = parts.splits["train"]
    assert train.offsets is not None and train.cont.shape[1] == 1 and parts.seq_len == train.length.max() > 1000
    tokens, rows = parts.tokens["train"], slice(0, 100)
    assert isinstance(tokens["mask"], Ragged)
    pretrained = dataclasses.replace(parts.job, config=parts.cfg.model_copy(update={"pretrain": PretrainConfig()}))
    pretraining = pretrain_events(Assembly(pretrained, store), [])  # masks objects of a padded table: padded
    assert pretraining.offsets is None and len(pretraining) == len(train)
    fixed, data = parts.cfg.train.model_copy(update={"fixed_shape": "pad"}), (tokens, parts.targets["train"])
    with pytest.raises(ValueError, match="train.fixed_shape needs one batch shape"):
        Trainer(parts.model(), fixed, "cpu", len(train)).fit(data, data, Path("unused"))
    padded = take(parts.tokenizer.transform(train.padded()), rows)  # as wide as the longest event of the split
    torch.manual_seed(0)
    model = parts.model().eval()
    got = outputs(model, take(tokens, rows))
    assert take(tokens, rows)["mask"].shape[1] < padded["mask"].shape[1]
    torch.testing.assert_close(got, outputs(model, padded), rtol=1e-5, atol=1e-5)
