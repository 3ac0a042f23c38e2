"""The bottom floor: every config section's schema, loading with error text, the tokenizer registry.

Torch-free and data-free (a test checks `sys.modules`): validating an experiment loads
neither torch nor h5py. Everything above imports its configs from here.
"""

from expmatrix.config.data import (
    N_OUTPUTS,
    SOURCE_TASKS,
    DataConfig,
    KeysConfig,
    PulsesConfig,
    StreamConfig,
    SyntheticConfig,
    TaskConfig,
    n_outputs,
)
from expmatrix.config.experiment import ExperimentSpec, load_experiment
from expmatrix.config.job import Job, JobConfig
from expmatrix.config.layout import VECTORS
from expmatrix.config.loading import (
    describe_errors,
    flatten,
    load_mapping,
    load_yaml,
    parse_set,
    set_dotted,
    short_hash,
    validate,
)
from expmatrix.config.model import ModelConfig
from expmatrix.config.presets import Presets, load_preset
from expmatrix.config.report import ReportConfig
from expmatrix.config.run import HEARTBEAT_SECONDS, STALE_AFTER_SECONDS, RunConfig, WandbConfig
from expmatrix.config.strict import SpecError, Strict, record_reads
from expmatrix.config.tokenizers import (
    KINDS,
    BinnedTokenizerConfig,
    CodeFields,
    DirectTokenizerConfig,
    FactorizedTokenizerConfig,
    FeatureTransform,
    FSQTokenizerConfig,
    IntegerTokenizerConfig,
    KMeansTokenizerConfig,
    TokenizerConfig,
    TokenizerFields,
    VQVAETokenizerConfig,
    fit_signature,
)
from expmatrix.config.train import REGRESSION_LOSSES, TrainConfig
from expmatrix.config.tune import VAL_METRICS, TuneConfig

__all__ = [
    "HEARTBEAT_SECONDS",
    "KINDS",
    "N_OUTPUTS",
    "REGRESSION_LOSSES",
    "SOURCE_TASKS",
    "STALE_AFTER_SECONDS",
    "VAL_METRICS",
    "VECTORS",
    "BinnedTokenizerConfig",
    "CodeFields",
    "FSQTokenizerConfig",
    "KMeansTokenizerConfig",
    "VQVAETokenizerConfig",
    "DataConfig",
    "PulsesConfig",
    "StreamConfig",
    "DirectTokenizerConfig",
    "ExperimentSpec",
    "FactorizedTokenizerConfig",
    "FeatureTransform",
    "IntegerTokenizerConfig",
    "Job",
    "JobConfig",
    "KeysConfig",
    "ModelConfig",
    "Presets",
    "ReportConfig",
    "RunConfig",
    "SpecError",
    "Strict",
    "SyntheticConfig",
    "TaskConfig",
    "TokenizerConfig",
    "TokenizerFields",
    "TrainConfig",
    "TuneConfig",
    "WandbConfig",
    "describe_errors",
    "fit_signature",
    "flatten",
    "load_experiment",
    "load_mapping",
    "load_preset",
    "load_yaml",
    "n_outputs",
    "parse_set",
    "record_reads",
    "set_dotted",
    "short_hash",
    "validate",
]
