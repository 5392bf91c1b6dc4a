"""One typed configuration for training: dataclass defaults ← YAML file ← ``--set a.b=value``.

The resolved configuration is written to ``<run>/config.yaml`` and read back by
:func:`clipae.models.run.load_run`, so a run folder always says exactly how it was made.
Only the method's temperature (τ = 1.0, Eq. 8) is given by the paper; every other default is
explained in ``models/README.md``.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..core.errors import BadInput

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(BadInput, ValueError):
    """A configuration that cannot be used (one line)."""


@dataclass
class StreamsConfig:
    """Manifest stream names of each view (DESIGN.md)."""
    cbp: list[str] = field(default_factory=lambda: ["i3d_rgb", "i3d_flow"])  # the two UGCT streams
    vlp: str = "clip"
    audio: str = "vggish"


@dataclass
class DataConfig:
    train_subset: str = "validation"     # THUMOS14 trains on its validation videos
    test_subset: str = "test"
    num_segments: int = 750              # snippets sampled per training video (W-TALC / CoLA)
    skip_missing: bool = False           # train on what exists when ground-truth videos lack features
    val_fraction: float = 0.0            # training videos held out (never trained or clustered on) to validate
    streams: StreamsConfig = field(default_factory=StreamsConfig)


@dataclass
class ModelConfig:
    use_caf: bool = True                 # Sec. 2.1, Eq. 1-3
    use_ccp: bool = True                 # Sec. 2.2, Eq. 4-6
    caf_dim: int = 512                   # d_x
    caf_stages: int = 2                  # cross-attention stages with dense skips
    ccp_dim: int = 512                   # d of Eq. 5
    hidden_dim: int = 2048               # per-stream T-CAM width (CoLA)
    attention_dim: int = 512             # per-stream attention (filtering) branch width (BaS-Net)
    dropout: float = 0.7                 # CoLA / BaS-Net
    background_contrast: float = 0.5     # β: video scores from fg − β·bg pooled T-CAM (0: STPN's fg alone)


@dataclass
class LossConfig:
    use_ssl: bool = True                 # Eq. 7-9
    topk_ratio: int = 8                  # top-k MIL: k = ceil(T / ratio)
    attention_l1: float = 0.05           # sparsity of the attention (STPN's L1), on its mean over snippets
    background_contrast: float = 1.0     # β of the attention's loss: fg − β·bg pooled T-CAM (0: STPN's fg
                                         # alone; 1 chosen on the validation split, docs/benchmark.md)
    collab_weight: float = 1.0           # UGCT pseudo-label loss on the attention
    collab_threshold: float = 0.5        # binarises the other stream's attention
    collab_warmup_epochs: int = 5        # epochs before the streams teach each other
    collab_every_round: bool = True      # the warm-up starts again with every round's new clusters
    ssl_weight: float = 0.1              # weight of L_self (Eq. 9) in the total loss
    temperature: float = 1.0             # τ of Eq. 8 (paper: 1.0)
    bank_momentum: float = 0.5           # memory bank update (instance discrimination)


@dataclass
class ClusterConfig:
    method: str = "kmeans"               # "kmeans" (scikit-learn) or "spectral"
    num_clusters: int | None = None      # None: the number of classes of the ground truth
    n_init: int = 10
    embedding: str = "contrast"          # how rounds >= 1 embed a video (clustering.EMBEDDINGS)
    first_embedding: str = "auto"        # round 0 (clustering.FIRST_ROUND): cluster.embedding weighted by a
                                         # label-free actionness ("split": 2-means halves of each video's
                                         # VLP view, clustered sign-invariantly whatever cluster.method says;
                                         # "actionness": distance from the video's mean), or "mean";
                                         # "auto": split with a VLP view (CCP on), else actionness
    smooth: int = 5                      # "split" only: moving average over this many snippets before 2-means
    stop_below: float = 0.0              # end the rounds early once fewer videos than this fraction change cluster


@dataclass
class TrainConfig:
    mode: str = "unsupervised"           # or "weakly"
    rounds: int = 5                      # cluster → train → re-embed iterations (TCAM: 4-5)
    epochs_per_round: int = 60
    final_round_share: float | None = 0.5   # fraction of the rounds x epochs_per_round budget the last
                                         # round trains (earlier rounds share the rest); None: equal rounds
    average_epochs: float | None = 10.0  # each round ends with an exponential moving average of its
                                         # weights over about this many epochs of steps; None: the last weights
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"                 # "auto", "cpu", "cuda", "cuda:1", ...
    num_workers: int = 0
    threads: int = 0                     # torch CPU threads (0: torch's default)


#: ``proposals.nms`` values (the NMS variants of :data:`clipae.eval.proposals.NMS`)
NMS_KINDS = ("soft", "hard")


class ProposalConfigError(ConfigError):
    """An invalid proposal setting (one line)."""


@dataclass
class ProposalConfig:
    """``proposals``: how a run's outputs become temporal proposals (:mod:`clipae.eval.proposals`
    says what each setting does). Part of a run's ``config.yaml``, so ``clipae-eval --run`` and
    ``clipae-localize`` use the settings the run was trained with (``--set proposals.max_per_video=5``)."""

    class_threshold: float = 0.2            # keep columns with video score >= this (CoLA 0.2)
    keep_top_class: bool = True             # ... or the best one if none passes
    normalize: bool = True                  # min-max normalise T-CAM columns and attention (CoLA)
    cas_thresholds: list[float] = field(default_factory=lambda: np.round(np.arange(0.0, 0.25, 0.025), 3).tolist())  # CoLA
    attention_thresholds: list[float] = field(default_factory=lambda: np.round(np.linspace(0.1, 0.9, 20), 4).tolist())  # DELU
    outer_ratio: float = 0.25               # λ of the outer-inner contrast (CoLA)
    class_score_weight: float = 0.2         # γ: weight of the video-level class score (CoLA)
    nms: str = "soft"                       # "soft" (Gaussian soft-NMS) or "hard"
    soft_nms_sigma: float = 0.3             # σ (DELU)
    nms_threshold: float = 0.6              # hard NMS: drop IoU >= this (CoLA)
    max_per_video: int | None = None        # keep the best N proposals per video (None: all)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> "ProposalConfig":
        self.cas_thresholds = [float(t) for t in self.cas_thresholds]
        self.attention_thresholds = [float(t) for t in self.attention_thresholds]
        if self.nms not in NMS_KINDS:
            raise ProposalConfigError(f"proposals.nms must be one of {', '.join(NMS_KINDS)}, not {self.nms!r}")
        if not (self.cas_thresholds or self.attention_thresholds):
            raise ProposalConfigError("proposals need at least one T-CAM or attention threshold")
        if self.soft_nms_sigma <= 0 or self.outer_ratio < 0:
            raise ProposalConfigError("proposals.soft_nms_sigma must be > 0 and outer_ratio >= 0")
        if self.max_per_video is not None and self.max_per_video < 1:
            raise ProposalConfigError("proposals.max_per_video must be >= 1 (or null)")
        return self

    @classmethod
    def from_dict(cls, values: dict | None) -> "ProposalConfig":
        """Defaults overridden by ``values`` (e.g. a YAML section); unknown keys are an error."""
        values = dict(values or {})
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ProposalConfigError(f"unknown proposal setting(s): {', '.join(sorted(unknown))}")
        return cls(**values)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        if self.train.mode not in ("unsupervised", "weakly"):
            raise ConfigError(f"train.mode must be 'unsupervised' or 'weakly', not {self.train.mode!r}")
        from .clustering import EMBEDDINGS, METHODS
        if self.cluster.method not in METHODS:
            raise ConfigError(f"cluster.method must be one of {', '.join(METHODS)}, not {self.cluster.method!r}")
        if self.cluster.embedding not in EMBEDDINGS:
            raise ConfigError(f"cluster.embedding must be one of {', '.join(EMBEDDINGS)}, not {self.cluster.embedding!r}")
        from .clustering import FIRST_ROUND
        firsts = ["auto", "mean", *FIRST_ROUND]
        if self.cluster.first_embedding not in firsts:
            raise ConfigError(f"cluster.first_embedding must be one of {', '.join(firsts)}, "
                              f"not {self.cluster.first_embedding!r}")
        self.proposals.check()
        if len(self.data.streams.cbp) != 2:
            raise ConfigError("data.streams.cbp must name exactly two streams (RGB and flow)")
        for key, (low, low_open, high, high_open) in RANGES.items():
            section, name = key.split(".")
            value = getattr(getattr(self, section), name)
            if value is not None and not _within(value, low, low_open, high, high_open):
                raise ConfigError(f"{key} must be {_describe(low, low_open, high, high_open)}, not {value!r}")
        return self

    def required_streams(self) -> list[str]:
        """Manifest streams this configuration reads: no vggish without CAF, no clip without CCP."""
        names = list(self.data.streams.cbp)
        if self.model.use_ccp:
            names.append(self.data.streams.vlp)
        if self.model.use_caf:
            names.append(self.data.streams.audio)
        return names


#: ranges ``(low, low excluded, high, high excluded)`` of the numeric fields; None = unbounded
AT_LEAST_1 = (1, False, None, False)
AT_LEAST_0 = (0, False, None, False)
POSITIVE = (0, True, None, False)
FRACTION = (0, False, 1, False)        # [0, 1]
FRACTION_BELOW_1 = (0, False, 1, True)  # [0, 1)
SHARE = (0, True, 1, False)           # (0, 1]


def _fields(bounds: tuple, *keys: str) -> dict[str, tuple]:
    return dict.fromkeys(keys, bounds)


#: allowed values of the numeric fields, ``section.field: range``
RANGES: dict[str, tuple[float | None, bool, float | None, bool]] = {
    **_fields(AT_LEAST_1, "data.num_segments", "model.caf_dim", "model.caf_stages", "model.ccp_dim",
              "model.hidden_dim", "model.attention_dim", "loss.topk_ratio", "cluster.n_init", "cluster.smooth", "train.rounds",
              "train.epochs_per_round", "train.batch_size"),
    **_fields(AT_LEAST_0, "loss.attention_l1", "loss.collab_weight", "loss.collab_warmup_epochs", "loss.ssl_weight",
              "train.weight_decay", "train.seed", "train.num_workers", "train.threads"),
    **_fields(POSITIVE, "loss.temperature", "train.lr", "train.average_epochs"),
    **_fields(FRACTION, "cluster.stop_below", "loss.collab_threshold", "loss.bank_momentum", "model.background_contrast",
              "loss.background_contrast"),
    **_fields(FRACTION_BELOW_1, "data.val_fraction", "model.dropout"),
    **_fields(SHARE, "train.final_round_share"),
    "cluster.num_clusters": (2, False, None, False),   # None: as many as the ground truth has classes
}


def _within(value: float, low, low_open: bool, high, high_open: bool) -> bool:
    """Whether ``value`` is a finite number in the range (NaN and infinities never are)."""
    if not math.isfinite(value):
        return False
    if low is not None and (value <= low if low_open else value < low):
        return False
    return high is None or (value < high if high_open else value <= high)


def _describe(low, low_open: bool, high, high_open: bool) -> str:
    if high is None:
        return f"{'greater than' if low_open else 'at least'} {low}"
    return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def _coerce(value, tp, where: str):
    """``value`` (from YAML) checked against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, where) for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def _merge(obj, values: dict, prefix: str = "") -> None:
    """Overwrite fields of dataclass ``obj`` with the nested dict ``values``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(type(obj))
    known = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        where = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"unknown config key {where!r} (known here: {', '.join(sorted(known))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, where + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], where))


def parse_override(text: str) -> dict:
    """``"a.b=value"`` → ``{"a": {"b": value}}`` with the value read as YAML (``1e-3``, ``false``, ``[x, y]``)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def resolve_config_path(name_or_path: str) -> Path:
    """A YAML file, or the name of a bundled config (``thumos14``, ``anet12``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    bundled = CONFIG_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    names = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config {name_or_path!r}: no such file and no bundled config of that name ({names})")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                extra: dict | None = None) -> Config:
    """Defaults, then the YAML file at ``path``, then ``extra`` (a nested dict), then ``overrides``."""
    cfg = Config()
    if path is not None:
        p = resolve_config_path(str(path))
        try:
            values = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from None
        _merge(cfg, values)
    if extra:
        _merge(cfg, extra)
    for text in overrides or []:
        _merge(cfg, parse_override(text))
    return cfg.validate()


def config_from_dict(values: dict) -> Config:
    cfg = Config()
    _merge(cfg, values)
    return cfg.validate()


#: keys added after run folders were first written, with the value that reproduces a folder saved
#: before its key existed (a saved ``config.yaml`` without the key was trained / scored that way)
BEFORE_KEY = {"train.final_round_share": None,      # equal rounds
              "train.average_epochs": None,         # rounds ended on their last weights
              "model.background_contrast": 0.0,     # video scores from the foreground pooling alone
              "loss.background_contrast": 0.0}      # the attention trained on the foreground pooling alone


def saved_run_config(values: dict) -> Config:
    """The :class:`Config` of a run folder's ``config.yaml`` (``values``, already YAML-loaded):
    every key the file lacks from :data:`BEFORE_KEY` takes its old value, not today's default."""
    if isinstance(values, dict):
        values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
        for key, old in BEFORE_KEY.items():
            section, name = key.split(".")
            if isinstance(values.get(section), dict):
                values[section].setdefault(name, old)
    return config_from_dict(values)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
