"""The `data` section: which file, which layout (source), the task and the feature selection."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from expmatrix.config.layout import CONT_NAMES, DEFAULT_KEYS, PROCESSES
from expmatrix.config.strict import Strict

# The source decides the task: what the model's outputs mean and which losses apply.
SOURCE_TASKS = {"fourtops": "classification", "icecube": "direction"}
N_OUTPUTS = {"classification": 2, "direction": 3}  # binary logits; a 3-vector (unit direction, vMF: norm = kappa)


class SyntheticConfig(Strict):
    LATER_DEFAULTS = {"generator": "builtin"}

    events: int = Field(100_000, ge=100)  # all splits together (80/10/10)
    seed: int = 0
    # builtin: the embedded generator of the source; pythia: Pythia 8 + FastJet (fourtops only; the `physics`
    # extra, data/pythia/); long: several pulses per sensor, heavy-tailed event length, written ragged (icecube
    # only, data/icecube_long.py)
    generator: Literal["builtin", "pythia", "long"] = "builtin"


class PulsesConfig(Strict):
    """Which pulses of an event the model sees (pulse sources): at most `max`, chosen by `select`, then in time
    order. The same for every tokenizer; applied per event while the file is read."""

    max: int | None = Field(None, ge=1)  # None: every pulse
    # time: the first `max`; nonaux_first: non-auxiliary pulses first, each by time (the Kaggle second-place
    # model); charge: the brightest; random: a seeded sample (the same for every job)
    select: Literal["time", "nonaux_first", "charge", "random"] = "time"
    LATER_DEFAULTS = {"select": "time"}

    @model_validator(mode="after")
    def _select_needs_max(self) -> PulsesConfig:
        if self.max is None and "select" in self.model_fields_set:
            raise ValueError("data.pulses.select has no effect without data.pulses.max: set max or remove select")
        return self


class StreamConfig(Strict):
    """Pulse sources: the splits are read from the file block by block while a job trains and evaluates, so that
    memory holds a few blocks of tokens, not the file. An epoch visits the blocks in a shuffled order and the
    events of each block in a shuffled order (a pure function of seed and epoch, as in memory)."""

    block_events: int = Field(16384, ge=16)  # events per block; at most 2 blocks of a split are held at once
    fit_events: int = Field(65536, ge=100)  # the tokenizer is fitted on the first this many training events


class TaskConfig(Strict):
    """Binary task: the declared signal processes against the background ones."""

    signal: list[int] = [1]
    background: list[int] = [2, 3, 4, 5]

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        for name in ("signal", "background"):
            ids = getattr(self, name)
            if not ids or set(ids) - set(PROCESSES):
                raise ValueError(f"{name} must be a non-empty list of process ids from {sorted(PROCESSES)}, got {ids}")
        if set(self.signal) & set(self.background):
            raise ValueError(f"signal {self.signal} and background {self.background} overlap")
        return self


class KeysConfig(Strict):
    """Dataset names in the file (the real file spells `Y_train` with a capital Y)."""

    x_train: str = DEFAULT_KEYS["x_train"]
    x_val: str = DEFAULT_KEYS["x_val"]
    x_test: str = DEFAULT_KEYS["x_test"]
    y_train: str = DEFAULT_KEYS["y_train"]
    y_val: str = DEFAULT_KEYS["y_val"]
    y_test: str = DEFAULT_KEYS["y_test"]


FOURTOPS_ONLY = ("keys", "task", "use_met", "cont_features", "unit", "order")  # settings of the 4tops layout and task


class DataConfig(Strict):
    LATER_DEFAULTS = {"order": "input", "pulses": {"max": None}, "stream": None}

    source: Literal["fourtops", "icecube"] = "fourtops"  # the layout, and the task: see SOURCE_TASKS
    path: str = "synthetic"  # "synthetic" (embedded generator, cached) or an .h5 path relative to the experiment
    synthetic: SyntheticConfig = SyntheticConfig()
    keys: KeysConfig = KeysConfig()
    task: TaskConfig = TaskConfig()
    use_met: bool = True  # MET and MET-phi as extra tokens
    cont_features: list[int] = [1, 2, 3]  # 0=E 1=pT 2=eta 3=phi; [1,2,3] is the 4-vector, [0,1,2,3] the 5-vector
    max_events: int | None = Field(None, ge=10)  # cap on training events; val/test are cut in the same proportion
    unit: Literal["GeV", "MeV", "TeV"] = "GeV"  # energy unit of the file; everything downstream is GeV
    # object order in each event, the same for every tokenizer: as stored, pT-descending, or a seeded shuffle
    # (the same permutation for every job); real objects first, empty slots last in both
    order: Literal["input", "pt", "shuffled"] = "input"
    pulses: PulsesConfig = PulsesConfig()  # pulse sources: the pulses of each event a model sees
    stream: StreamConfig | None = None  # pulse sources: None reads the splits into memory; set: block by block

    @field_validator("pulses", "stream")
    @classmethod
    def _pulse_sources_only(cls, v: PulsesConfig | StreamConfig | None, info: ValidationInfo):
        setting = v is not None and not (isinstance(v, PulsesConfig) and v.max is None)
        if info.data.get("source", "fourtops") == "fourtops" and setting:
            raise ValueError("a pulse setting; data.source fourtops has objects, not pulses: remove it")
        return v

    @model_validator(mode="after")
    def _synthetic_only_for_synthetic(self) -> DataConfig:
        if self.path != "synthetic" and "synthetic" in self.model_fields_set:
            raise ValueError(f"data.synthetic has no effect when data.path is a file ({self.path}): remove it")
        generator = self.synthetic.generator
        made = {"pythia": "fourtops", "long": "icecube"}.get(generator, self.source)
        if made != self.source:
            raise ValueError(f"data.synthetic.generator: {generator} makes {made} events, not {self.source}")
        return self

    @field_validator(*FOURTOPS_ONLY)
    @classmethod
    def _fourtops_only(cls, v: Any, info: ValidationInfo) -> Any:
        """Set on another source, a 4tops setting would do nothing: an error at its own key."""
        source = info.data.get("source", "fourtops")
        if source != "fourtops":
            raise ValueError(
                f"a fourtops setting; data.source {source} reads the pulse features its tokenizer preset declares "
                "and has no task, MET, unit or dataset keys to set: remove it"
            )
        return v

    def _trim(self, out: dict[str, Any]) -> dict[str, Any]:
        """Other sources leave the 4tops settings out of the resolved config (and so out of job ids), and a file
        leaves out the generator's settings."""
        if out["source"] != "fourtops":
            for key in FOURTOPS_ONLY:
                out.pop(key, None)
        if out["path"] != "synthetic":
            out.pop("synthetic", None)
        return out

    @field_validator("cont_features")
    @classmethod
    def _features(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v) or not set(v) <= set(range(len(CONT_NAMES))):
            raise ValueError(f"expected distinct indices from 0..{len(CONT_NAMES) - 1} (E, pT, eta, phi), got {v}")
        return v




def n_outputs(cfg: DataConfig) -> int:
    """Outputs of the model's head for the source's task."""
    return N_OUTPUTS[SOURCE_TASKS[cfg.source]]
