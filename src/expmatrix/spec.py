"""The experiment and job config schema, and its validation.

Every section is a strict pydantic model: an unknown key, a value of the wrong
type or an unknown choice is an error that names the key path and what was
expected. `JobConfig` is the fully resolved config one job runs with.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from expmatrix.data import SOURCE_TASKS
from expmatrix.data.layout import CONT_NAMES, DEFAULT_KEYS, GLOBAL_NAMES, PROCESSES

FEATURES = Literal["E", "pT", "eta", "phi", "MET", "MET_phi"]
assert set(FEATURES.__args__) == set(CONT_NAMES + GLOBAL_NAMES)


class SpecError(ValueError):
    """A config that cannot run; the message names the file and key path."""


# While a job's components are built, `record_reads` notes every config field they read.
_TRACE: ContextVar[tuple[dict[int, str], set[str]] | None] = ContextVar("config_reads", default=None)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name[0] != "_":
            trace = _TRACE.get()
            if trace is not None and name in type(self).model_fields:
                paths, reads = trace  # a section (a Strict value) read counts for its tag only: `<key>#`
                reads.add(paths.get(id(self), "") + name + ("#" if isinstance(value, Strict) else ""))
        return value


@contextmanager
def record_reads(config: Strict) -> Iterator[set[str]]:
    """Collect the dotted keys of `config` whose values are read inside the block
    (a dict-valued field counts as read as a whole; `model_dump` reads nothing). A section
    read as a whole is noted as `<key>#`: it consumes the key itself and its `kind` tag."""
    paths: dict[int, str] = {}

    def walk(model: Strict, prefix: str) -> None:
        paths[id(model)] = prefix
        for name in type(model).model_fields:
            value = model.__dict__[name]
            if isinstance(value, Strict):
                walk(value, f"{prefix}{name}.")

    walk(config, "")
    reads: set[str] = set()
    token = _TRACE.set((paths, reads))
    try:
        yield reads
    finally:
        _TRACE.reset(token)


# ---------------------------------------------------------------- data


class SyntheticConfig(Strict):
    events: int = Field(100_000, ge=100)  # all splits together (80/10/10)
    seed: int = 0


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


FOURTOPS_ONLY = ("keys", "task", "use_met", "cont_features", "unit")  # settings of the 4tops layout and task


class DataConfig(Strict):
    source: Literal["fourtops", "icecube"] = "fourtops"  # the layout, and the task: see data.SOURCE_TASKS
    path: str = "synthetic"  # "synthetic" (embedded generator, cached) or an .h5 path relative to the experiment
    synthetic: SyntheticConfig = SyntheticConfig()
    keys: KeysConfig = KeysConfig()
    task: TaskConfig = TaskConfig()
    use_met: bool = True  # MET and MET-phi as extra tokens
    cont_features: list[int] = [1, 2, 3]  # 0=E 1=pT 2=eta 3=phi; [1,2,3] is the 4-vector, [0,1,2,3] the 5-vector
    max_events: int | None = Field(None, ge=10)  # cap on training events; val/test are cut in the same proportion
    unit: Literal["GeV", "MeV", "TeV"] = "GeV"  # energy unit of the file; everything downstream is GeV

    @model_validator(mode="after")
    def _synthetic_only_for_synthetic(self) -> DataConfig:
        if self.path != "synthetic" and "synthetic" in self.model_fields_set:
            raise ValueError(f"data.synthetic has no effect when data.path is a file ({self.path}): remove it")
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

    @model_serializer(mode="wrap")
    def _without_fourtops_fields(self, handler) -> dict[str, Any]:
        """Other sources leave the 4tops settings out of the resolved config (and so out of job ids)."""
        out = handler(self)
        if self.source != "fourtops":
            for key in FOURTOPS_ONLY:
                out.pop(key, None)
        return out

    @field_validator("cont_features")
    @classmethod
    def _features(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v) or not set(v) <= set(range(len(CONT_NAMES))):
            raise ValueError(f"expected distinct indices from 0..{len(CONT_NAMES) - 1} (E, pT, eta, phi), got {v}")
        return v


# ---------------------------------------------------------------- tokenizers


def _tagged(value: Any) -> Any:
    """A bare string in YAML is the `kind` of an option block: `phi: cyclic` == `phi: {kind: cyclic}`."""
    return {"kind": value} if isinstance(value, str) else value


# Feature names a tokenizer preset may declare: the 4tops columns and globals, and IceCube pulse features.
TOKEN_FEATURES = Literal[
    "E", "pT", "eta", "phi", "MET", "MET_phi", "time", "charge", "x", "y", "z", "sensor_id", "auxiliary"
]  # fmt: skip
PI = 3.141592653589793


class FeatureTransform(Strict):
    """One continuous feature: v -> clip(fitted((op(v) - shift) * scale)), e.g. IceCube charge log10(q)/3."""

    op: Literal["identity", "log", "log10", "log1p"] = "identity"
    shift: float = 0.0
    scale: float = 1.0
    fit: Literal["none", "standardize", "robust"] = "none"  # robust: median and 1/max(p84-p50, p50-p16)
    clip: tuple[float, float] | None = None  # applied last, to the fitted value

    @model_validator(mode="after")
    def _check(self) -> FeatureTransform:
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.clip is not None and not self.clip[0] < self.clip[1]:
            raise ValueError(f"clip must be [low, high] with low < high, got {list(self.clip)}")
        return self


class RaiseOnInvalid(Strict):
    kind: Literal["error"]  # NaN/inf, or a value outside the op's domain, is an error naming the feature


class SentinelForInvalid(Strict):
    kind: Literal["sentinel"]  # invalid values become `value`, and a validity channel (+1/-1) is added
    value: float = 0.0


class LinearValueEmbedding(Strict):
    kind: Literal["linear"]


class MLPValueEmbedding(Strict):
    kind: Literal["mlp"]  # Linear -> LayerNorm -> GELU -> Linear


class PeriodicValueEmbedding(Strict):
    kind: Literal["periodic"]  # cos/sin(2 pi c x) with learned frequencies c ~ N(0, sigma), then Linear
    frequencies: int = Field(8, ge=1)
    sigma: float = Field(1.0, gt=0)


InvalidPolicy = Annotated[RaiseOnInvalid | SentinelForInvalid, Field(discriminator="kind"), BeforeValidator(_tagged)]
ValueEmbedding = Annotated[
    LinearValueEmbedding | MLPValueEmbedding | PeriodicValueEmbedding,
    Field(discriminator="kind"),
    BeforeValidator(_tagged),
]


def _standardized(op: str) -> FeatureTransform:
    return FeatureTransform(op=op, fit="standardize")


class DirectTokenizerConfig(Strict):
    """Continuous embedding: per-feature transform, fitted on the training split, then a value embedding."""

    kind: Literal["direct"]
    name: str
    transforms: dict[TOKEN_FEATURES, FeatureTransform] = Field(
        default_factory=lambda: {
            "E": _standardized("log"),
            "pT": _standardized("log"),
            "eta": _standardized("identity"),
            "phi": _standardized("identity"),
            "MET": _standardized("log"),
            "MET_phi": _standardized("identity"),
        }
    )
    invalid: InvalidPolicy = Field(default_factory=lambda: RaiseOnInvalid(kind="error"))
    embedding: ValueEmbedding = Field(default_factory=lambda: LinearValueEmbedding(kind="linear"))
    object_type: bool = True  # add a learned embedding of the object-type id (False for IceCube pulses)


class QuantileBins(Strict):
    kind: Literal["quantile"]  # equal-frequency edges from the training split's real entries
    bins: int | None = Field(None, ge=2)  # None: the tokenizer's n_bins


class FixedBins(Strict):
    kind: Literal["fixed"]  # equal widths over `range`; values outside go to the edge bins (counted)
    range: tuple[float, float]
    bins: int | None = Field(None, ge=2)
    width: float | None = None  # optional, but if given it must equal (high - low) / bins


class CyclicBins(Strict):
    kind: Literal["cyclic"]  # an angle: equal widths over `range`, values wrap around
    range: tuple[float, float] = (-PI, PI)
    bins: int | None = Field(None, ge=2)
    width: float | None = None  # NOTE: 5 bins over [-pi, pi) are 2*pi/5 wide, not the thesis plan's pi/5


BinRule = Annotated[QuantileBins | FixedBins | CyclicBins, Field(discriminator="kind"), BeforeValidator(_tagged)]


def _ambre_rules() -> dict[str, Any]:
    q, c = QuantileBins(kind="quantile"), CyclicBins(kind="cyclic")
    return {"E": q, "pT": q, "eta": q, "phi": c, "MET": q, "MET_phi": c.model_copy()}


class BinningFields(Strict):
    """What the joint and the factorized binned tokenizers share: the bins of every feature."""

    name: str
    n_bins: int = Field(5, ge=2)  # default bins per feature
    rules: dict[TOKEN_FEATURES, BinRule] = Field(default_factory=_ambre_rules)
    fit_on: Literal["all", "background"] = "all"  # which training events the quantile edges come from
    per_object_type: bool = False  # quantile edges of object features fitted per object type

    @model_validator(mode="after")
    def _widths_cover_the_range(self) -> BinningFields:
        for f, rule in self.rules.items():
            if isinstance(rule, QuantileBins):
                continue
            (lo, hi), n = rule.range, rule.bins or self.n_bins
            if not lo < hi:
                raise ValueError(f"rules.{f}.range must be [low, high] with low < high, got {list(rule.range)}")
            if rule.width is not None and abs(rule.width * n - (hi - lo)) > 1e-9 * (hi - lo):
                raise ValueError(
                    f"rules.{f}: {n} bins of width {rule.width:.6g} cover {rule.width * n:.6g}, "
                    f"but the range [{lo:.6g}, {hi:.6g}) is {hi - lo:.6g} wide: use width {(hi - lo) / n!r}"
                )
        return self


class BinnedTokenizerConfig(BinningFields):
    """Joint (Ambre) binning: one mixed-radix token per object, MET and MET-phi tokens after."""

    kind: Literal["binned"]


class FactorizedTokenizerConfig(BinningFields):
    """The same bins, one integer per feature, each with its own embedding table."""

    kind: Literal["factorized"]
    combine: Literal["sum", "concat"] = "sum"  # concat: the per-feature embeddings are concatenated, then projected


class RoundCodes(Strict):
    kind: Literal["round"]  # code = clip(round((x - first - offset) * scale), 0, codes - 1)
    offset: float = 0.0
    scale: float = 1.0  # 1 / bin width
    codes: int = Field(ge=1)  # how many codes (the vocabulary before the reserved ids)
    relative_to_first: bool = False  # subtract the event's smallest value (IceCube: time of the first pulse)


class QuantileCodes(Strict):
    kind: Literal["quantile"]  # equal-frequency bins fitted on the training split's real entries
    bins: int = Field(ge=2)


class CategoricalCodes(Strict):
    kind: Literal["categorical"]  # integer values 0..categories-1, e.g. IceCube sensor_id (5160)
    categories: int = Field(ge=1)


IntegerRule = Annotated[
    RoundCodes | QuantileCodes | CategoricalCodes, Field(discriminator="kind"), BeforeValidator(_tagged)
]


class IntegerTokenizerConfig(Strict):
    """Per-feature integer codes (0 = padding, 1 = mask), each with its own nn.Embedding."""

    kind: Literal["integer"]
    name: str
    rules: dict[TOKEN_FEATURES, IntegerRule]
    object_type: bool = True  # the object-type id as one more categorical code
    combine: Literal["sum", "concat"] = "concat"  # concat: concatenated, then projected to the model width


TokenizerConfig = Annotated[
    DirectTokenizerConfig | BinnedTokenizerConfig | FactorizedTokenizerConfig | IntegerTokenizerConfig,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------- model and training


class ModelConfig(Strict):
    target_params: int = Field(400_000, ge=1000)  # width is solved so the trainable total lands within 2% of this
    layers: int = Field(8, ge=1)
    heads: int = Field(8, ge=1)
    ff_ratio: float = Field(2.0, gt=0)  # FFN width / model width before the budget fine-tunes it
    block: Literal["normformer", "prenorm"] = "normformer"
    position: Literal["sinusoidal", "learned", "rope", "none"] = "sinusoidal"  # none: the objects are a set
    rope_theta: float = Field(10_000.0, gt=0)  # rotary base frequency; read only when position is rope
    pooling: Literal["cls", "mean", "max"] = "cls"
    dropout: float = Field(0.0, ge=0, lt=1)


class TrainConfig(Strict):
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(64, ge=1)  # events per forward pass; an optimizer step sees batch_size * grad_accum
    grad_accum: int = Field(1, ge=1)  # micro-batches whose gradients are summed before one optimizer step
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(1000, ge=0)  # linear warmup over optimizer steps, then the schedule
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # cosine only: the final lr as a fraction of lr
    grad_clip: float | None = Field(1.0, gt=0)
    loss: Literal["cross_entropy", "mse", "huber", "cosine", "vmf"] = "cross_entropy"
    huber_delta: float = Field(1.0, gt=0)  # huber only
    class_weights: Literal["balanced", "none"] = "balanced"  # cross_entropy only
    ema: bool = False  # evaluate an exponential moving average of the weights
    ema_decay: float = Field(0.999, gt=0, lt=1)  # ema only
    amp: Literal["bf16", "off"] = "bf16"  # bf16 autocast on CUDA; CPU always runs fp32
    compile: bool = False  # torch.compile the model's forward
    evaluate: Literal["last", "best"] = "last"  # which weights are tested: after the last epoch or at the best val loss
    early_stopping: Literal[False] = False  # the thesis trains a fixed number of epochs


REGRESSION_LOSSES = ("cosine", "vmf", "mse", "huber")


class JobConfig(Strict):
    """Everything one job needs; its canonical form is hashed into the job id."""

    data: DataConfig
    tokenizer: TokenizerConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    seed: int = 0

    @model_validator(mode="after")
    def _loss_fits_the_task(self) -> JobConfig:
        """The source decides the task: cross_entropy for classification, a regression loss for directions."""
        task, loss = SOURCE_TASKS[self.data.source], self.train.loss
        if (task == "classification") == (loss == "cross_entropy"):
            return self
        source = self.data.source
        if task == "classification":
            msg = f"{loss} needs regression targets; data.source {source} is classification: use cross_entropy"
        else:
            msg = f"{loss} needs class labels; data.source {source} is direction regression: use one of " + ", ".join(
                REGRESSION_LOSSES
            )
        raise self._error(("train", "loss"), loss, msg)

    @model_validator(mode="after")
    def _tokenizer_fits_the_source(self) -> JobConfig:
        """Pulses have one object type and no background class: settings about those would do nothing."""
        if SOURCE_TASKS[self.data.source] == "classification":
            return self
        tok, source = vars(self.tokenizer), self.data.source  # vars: not a read of the inert check
        inert = {
            "fit_on": (tok.get("fit_on") == "background", "every event is fitted on: there is no background class"),
            "per_object_type": (tok.get("per_object_type") is True, "every pulse has the same object type"),
            "object_type": (tok.get("object_type") is True, "every pulse has the same object type: set it false"),
        }
        for key, (bad, why) in inert.items():
            if bad:
                raise self._error(("tokenizer", key), tok[key], f"has no effect on data.source {source}: {why}")
        return self

    def _error(self, loc: tuple[str, ...], value: Any, msg: str) -> ValidationError:
        """A validation error at `loc` (so that it is reported at the key where the value was set)."""
        error = InitErrorDetails(type=PydanticCustomError("value_error", msg), loc=loc, input=value)
        return ValidationError.from_exception_data(type(self).__name__, [error])


# ---------------------------------------------------------------- experiment


class ReportConfig(Strict):
    """How `expmatrix report` reads the results; `reports/*.yaml` and command-line flags override it."""

    metric: str = "test.auroc"  # ranks the cells; effects, interactions and heatmaps compare it
    metrics: list[str] = [  # columns of the cell table (the primary metric is always among them)
        "test.auroc",
        "test.accuracy",
        "test.sig_eff_at_bkg_rej_10",
        "test.bkg_rej_at_sig_eff_50",
        "test.brier",
    ]
    higher_is_better: bool | dict[str, bool] | None = None  # None: by name (brier, ece, loss: lower); bool: primary
    baseline: dict[str, str] = {}  # factor -> level the others are compared to (default: the factor's first level)
    interactions: list[tuple[str, str]] | None = None  # factor pairs; None: each baseline factor x each other one
    top_k: int = Field(5, ge=1)  # cells in the ranking, the ROC and the learning-curve plots
    confidence: float = Field(0.95, gt=0, lt=1)  # of the bootstrap intervals
    bootstrap: int = Field(10_000, ge=100)  # resamples of the matched pairs
    seed: int = 0  # of the bootstrap: the same results give the same intervals

    @field_validator("baseline", mode="before")
    @classmethod
    def _level_names(cls, v: Any) -> Any:
        """Level names are strings (a factor `vect: [4, 5]` has levels "4" and "5")."""
        return {k: str(x) for k, x in v.items()} if isinstance(v, dict) else v


class WandbConfig(Strict):
    project: str | None = None  # default: the experiment name
    entity: str | None = None
    mode: Literal["offline", "online"] = "offline"  # compute nodes have no internet: `wandb sync` later


class RunConfig(Strict):
    """How jobs are run and tracked; none of it changes what a job trains, so none of it is in the job id."""

    tracking: Literal["none", "wandb"] = "none"  # metrics.jsonl is always written
    wandb: WandbConfig = WandbConfig()
    max_attempts: int = Field(3, ge=1)  # a job that failed this often is not retried by --retry-failed
    heartbeat_seconds: float = Field(30.0, gt=0)
    stale_after_seconds: float = Field(600.0, gt=0)  # a claim without a heartbeat for this long is taken over

    @model_validator(mode="after")
    def _heartbeat_fits(self) -> RunConfig:
        if self.stale_after_seconds <= 2 * self.heartbeat_seconds:
            raise ValueError("stale_after_seconds must exceed twice heartbeat_seconds, or live jobs look abandoned")
        return self


class ExperimentSpec(Strict):
    """The experiment YAML: fixed settings, factors and how to read the results."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    data: dict[str, Any] = {}
    base: dict[str, Any] = {}  # fixed for every job: model, train, ...
    factors: dict[str, list[Any] | dict[str, Any]] = {}  # see matrix._parse_factor for the forms
    seeds: list[int] = [0]
    exclude: list[dict[str, Any]] = []  # partial assignments {factor: level} that are skipped
    profiles: dict[str, dict[str, Any]] = {}
    report: ReportConfig = ReportConfig()
    run: RunConfig = RunConfig()
    presets: str = "../tokenizers"  # folder of tokenizer presets, relative to the experiment file
    hpc: dict[str, Any] = {}  # `expmatrix submit` settings: templates, cluster, ... (validated by executors.cluster)


# ---------------------------------------------------------------- loading and errors


def load_yaml(path: Path) -> Any:
    """Parse a YAML file; a syntax error names the file and line."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: invalid YAML: {e}") from None


TOKENIZER_KINDS: dict[str, type[BaseModel]] = {
    "direct": DirectTokenizerConfig,
    "binned": BinnedTokenizerConfig,
    "factorized": FactorizedTokenizerConfig,
    "integer": IntegerTokenizerConfig,
}
# tags of the option blocks inside a tokenizer preset: no key of their own in an error's key path
OPTION_TAGS = {"error", "sentinel", "linear", "mlp", "periodic", "quantile", "fixed", "cyclic", "round", "categorical"}


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (sub)model that holds `loc`'s last key, for 'unknown key' messages."""
    parts = list(loc[:-1])
    while parts:
        field = model.model_fields.get(str(parts.pop(0)))
        if field is None:
            return []
        ann = field.annotation
        candidates = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(candidates) > 1 and parts and parts[0] in TOKENIZER_KINDS:  # a tagged union: the tag picks
            candidates = [TOKENIZER_KINDS[parts.pop(0)]]
        if len(candidates) != 1:
            return []
        model = candidates[0]
    return sorted(model.model_fields)


def describe_errors(error: ValidationError, model: type[BaseModel]) -> list[tuple[str, str]]:
    """(dotted key path, message) for each error; unknown keys list the valid ones."""
    out = []
    for e in error.errors():
        tags = TOKENIZER_KINDS.keys() | OPTION_TAGS  # a tagged union's tag is no key
        key = ".".join(str(p) for p in e["loc"] if p not in tags)
        if e["type"] == "extra_forbidden":
            valid = _valid_keys(model, e["loc"])
            msg = "unknown key" + (f"; valid keys: {', '.join(valid)}" if valid else "")
        elif e["type"] == "missing" or isinstance(e["input"], dict):
            msg = e["msg"]
        else:
            msg = f"{e['msg']}, got {e['input']!r}"
        out.append((key, msg))
    return out


def load_experiment(path: str | Path) -> ExperimentSpec:
    """Read and validate the experiment file's top level (jobs are validated by the matrix)."""
    path = Path(path)
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return ExperimentSpec.model_validate(raw)
    except ValidationError as e:
        key, msg = describe_errors(e, ExperimentSpec)[0]
        raise SpecError(f"{path}: {key}: {msg}") from None
