"""One typed configuration object for every job.

Precedence, lowest first: the YAML file `conf/<env>.yaml` (env from `RECSYS_ENV`, default
`local`), environment variables `RECSYS__<SECTION>__<KEY>`, then `--set section.key=value`.
Secrets (fields marked `secret`) may only come from the environment, so they never sit in a
file under version control or in a process list.

Every error names the key and where its value came from, in one line, so a job can print it
and exit non-zero. Values are typed when the file loads: lists are tuples (a YAML list, or a
comma string from the environment or `--set`), closed sets of names are `Literal`s, mappings
carry typed values, and a section may check its own invariants (`ModelConfig.__post_init__`).

Why not pydantic-settings: it would bring a dependency the API and jobs do not otherwise need
and still leave the rules this loader exists for: secrets refused from files and `--set`, every
error naming the key and the file, variable or flag it came from, `--set section.key=value`, and
relative paths resolved against the project root. The typed conversion itself is one function
(`_convert`) over the dataclass annotations; the sections stay frozen dataclasses, which
`dataclasses.replace` derives variants of (the Last.fm chain, tests).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

ENV_PREFIX = "RECSYS__"
DEFAULT_ENV = "local"

# Closed sets of names, checked when the configuration loads.
Scaling = Literal["linear", "log", "bm25"]
Confidence = Literal["log", "linear"]
SplitKind = Literal["latest", "random"]
Reference = Literal["champion", "previous"]


class ConfigError(ValueError):
    """A configuration problem, described in one line naming the key and its source."""


def _secret() -> Any:
    return field(default="", repr=False, metadata={"secret": True})


def _path(default: str) -> Any:
    return field(default=default, metadata={"path": True})


@dataclass(frozen=True)
class SparkConfig:
    """The SparkSession every job builds (`recsys.spark`)."""

    master: str = "local[2]"
    app_name: str = "recsys"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    jars_dir: str = _path(".jars")
    ui_enabled: bool = False
    log_level: str = "WARN"
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LakeConfig:
    """Where the Delta Lake tables live (a local path or an object-store URI)."""

    root: str = _path(".state/lake")
    retention_hours: float = 168.0  # VACUUM keeps what versions this young need (make maintain)


@dataclass(frozen=True)
class LandingConfig:
    """The landing zone producers write event files to."""

    path: str = _path(".state/landing")


@dataclass(frozen=True)
class PostgresConfig:
    """The PostgreSQL server holding `accounts` (source) and the feature and click tables (sinks)."""

    host: str = "127.0.0.1"
    port: int = 15432
    database: str = "recsys"
    user: str = "recsys"
    password: str = _secret()
    connect_timeout_s: int = 5


@dataclass(frozen=True)
class RedisConfig:
    """The Redis server for online features and published recommendations."""

    url: str = "redis://127.0.0.1:16379"
    db: int = 0
    password: str = _secret()
    socket_timeout_s: float = 5.0


@dataclass(frozen=True)
class MlflowConfig:
    """MLflow tracking and registry; empty URIs mean a SQLite store under `services.state_dir`."""

    tracking_uri: str = ""
    registry_uri: str = ""
    experiment: str = "recsys"


@dataclass(frozen=True)
class PrivacyConfig:
    """Pseudonymisation and location coarsening in silver."""

    pseudonym_secret: str = _secret()
    geo_min_population: int = 100_000


@dataclass(frozen=True)
class IngestConfig:
    """Bronze ingestion of landing files and accounts."""

    max_files_per_trigger: int = 1000
    accounts_partitions: int = 4
    click_events_to_postgres: bool = True
    dedup_window_days: int = 2      # silver's dedupe looks for an event id this many days around a batch's dates


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds on input: the API answers 413/400 beyond them, and bronze quarantines landed lines
    beyond `max_count` or with an unsafe label as `invalid_value`.
    """

    max_body_bytes: int = 1_048_576      # a POST /v1/events body (413 above)
    max_events_per_request: int = 1000   # events in one POST (413 above)
    max_string_chars: int = 1000         # any string in a posted event (400 above)
    max_count: int = 1_000_000           # an event's `count` (Last.fm's largest listening count is 352,698)


@dataclass(frozen=True)
class QualityConfig:
    """Data quality rules: what is trusted, what is quarantined, when a run fails."""

    max_quarantine_rate: float = 0.05
    future_tolerance_s: int = 3600
    min_trusted_date: str = "2000-01-01"
    max_duration_ms: int = 3 * 3600 * 1000


@dataclass(frozen=True)
class ServicesConfig:
    """Local PostgreSQL and Redis started on demand when the config points at this machine."""

    manage: bool = True
    state_dir: str = _path(".state")


@dataclass(frozen=True)
class DatagenConfig:
    """The generated world (`jobs/generate.py`): users, catalog, days, producer dirt."""

    users: int = 5000
    artists: int = 2000
    days: int = 7
    start_date: str = "2026-10-01"
    seed: int = 7
    dirt_rate: float = 0.04
    dirt: dict[str, float] = field(default_factory=dict)
    gzip_share: float = 0.3
    files_per_hour: int = 2
    future_days: int = 7


@dataclass(frozen=True)
class GoldConfig:
    """Gold features, implicit-feedback weights and the online feature store."""

    feature_window_days: int = 90
    trending_recent_days: int = 7
    trending_baseline_days: int = 28
    max_favourite_artists: int = 100
    max_recent_tracks: int = 100
    weights: dict[str, float] = field(default_factory=dict)
    confidence: Confidence = "log"
    max_update_share: float = 0.1  # of the window's events entering, above which a build is a full one
    feature_ttl_s: int = 7 * 24 * 3600
    redis_prefix: str = "recsys"


@dataclass(frozen=True)
class ModelConfig:
    """ALS training: split, hyperparameter search, promotion rules, score threshold."""

    name: str = "recsys-als"
    k: int = 10
    split: SplitKind = "latest"
    holdout_share: float = 0.2
    seed: int = 42
    # The search space (recsys/model/search.py): choices as lists, ranges as [low, high] (one
    # value: fixed) searched on a log scale; `trials` at most, and no trial starts after
    # `search_budget_s`. YAML lists or comma strings ("16,32") in the environment and --set.
    ranks: tuple[int, ...] = (16, 32, 64, 128)
    reg_param_range: tuple[float, ...] = (0.01, 10.0)
    alpha_range: tuple[float, ...] = (1.0, 100.0)
    scalings: tuple[Scaling, ...] = ("linear", "log", "bm25")
    max_iters: tuple[int, ...] = (10, 15, 20)
    trials: int = 12
    search_budget_s: float = 300.0
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    # Promotion (recsys/model/train.py): beat the best popularity baseline by `min_lift`
    # (relative), the current champion by `promotion_margin` (absolute NDCG), and recommend
    # at least `min_coverage` of the catalog with spread scores.
    min_lift: float = 0.10
    promotion_margin: float = 0.0
    min_coverage: float = 0.05
    recommend_threshold: float = 0.0
    curve_max_k: int = 50
    retrain_every_h: float = 24.0   # `make refresh` trains when the last training run is older than this

    def __post_init__(self) -> None:
        for key in ("ranks", "scalings", "max_iters"):
            if not getattr(self, key):
                raise ConfigError(f"model.{key}: empty; give at least one value")
        for key in ("reg_param_range", "alpha_range"):
            bounds = getattr(self, key)
            if len(bounds) not in (1, 2) or not 0 < bounds[0] <= bounds[-1]:
                raise ConfigError(f"model.{key}: {list(bounds)} must be [low, high] (or one value) "
                                  "with 0 < low <= high")


@dataclass(frozen=True)
class RecommendConfig:
    """Batch top-K per user (`gold/recommendations`)."""

    top_k: int = 50                 # stored per user; the API serves up to this many
    block_users: int = 256          # users per matrix-multiply block (256 x 20,000 scores = 20 MB)


@dataclass(frozen=True)
class PublishConfig:
    """Versioned publishing of recommendation lists to Redis."""

    prefix: str = "recsys"
    shards: int = 64                # hashes per model alias and version (user_key -> list)
    keep_versions: int = 3          # live + previous versions kept for rollback
    expire_after_s: int = 3600      # older versions expire this long after leaving the window
    batch_size: int = 500           # hash fields per round trip on each executor


@dataclass(frozen=True)
class ServingConfig:
    """The recommendations API and its impression log."""

    host: str = "127.0.0.1"
    port: int = 8000
    default_k: int = 10
    impression_batch: int = 500     # impressions per landing file at most
    impression_flush_s: float = 5.0  # a partial batch is written after this many seconds
    impression_buffer_max: int = 100_000  # lines waiting in memory at most (landing unwritable): then dropped, counted
    workers: int = 1                # uvicorn worker processes (`make serve`)
    redis_timeout_ms: int = 250     # a request whose Redis calls take longer answers 503
    live_cache_s: float = 1.0       # how long a worker trusts the live version's name (a publish shows within it)
    access_log: bool = True         # one JSON line per request on stderr (no user ids)


@dataclass(frozen=True)
class AuthConfig:
    """Bearer tokens (signed JWTs) for the API, and its rate limit per credential."""

    jwt_secret: str = _secret()     # HS256 signing key, environment only
    issuer: str = "recsys"
    audience: str = "recsys-api"
    token_ttl_s: int = 3600         # lifetime of the tokens `make token` and the demo mint
    leeway_s: int = 30              # clock skew tolerated on expiry
    rate_per_s: float = 20.0        # requests per second per credential (429 above) ...
    burst: int = 40                 # ... with bursts up to this many


@dataclass(frozen=True)
class ExperimentConfig:
    """Sticky A/B assignment of users to model aliases."""

    name: str = "als-ab"
    salt: str = "als-ab-1"          # change to reshuffle users between variants
    buckets: int = 100
    # variant -> "model_alias:buckets"; the buckets of all variants add up to `buckets`
    variants: dict[str, str] = field(default_factory=lambda: {"A": "champion:50", "B": "challenger:50"})


@dataclass(frozen=True)
class FeedbackConfig:
    """Click attribution and the A/B analysis."""

    attribution_window_s: int = 1800   # a click counts for an impression this long after it
    clock_skew_s: int = 60             # ... or this long before it (client clocks)
    alpha: float = 0.05                # A/B test level (two-sided)
    power: float = 0.8                 # for the minimum detectable effect
    srm_alpha: float = 0.001           # sample-ratio mismatch flagged below this p-value


@dataclass(frozen=True)
class RerankConfig:
    """The learned re-ranker of ALS candidates."""

    enabled: bool = False              # recommend re-orders ALS candidates with the registered re-ranker
    name: str = "recsys-reranker"
    alias: str = "champion"            # which registered version `recommend` uses
    holdout_days: int = 1              # the latest days of feedback evaluate the re-ranker
    reg_param: float = 0.01
    max_iter: int = 50


@dataclass(frozen=True)
class MonitorConfig:
    """Data, feature and model drift checks."""

    reference: Reference = "champion"  # champion (its training snapshot) or previous (prior Delta versions)
    bins: int = 10                     # quantile bins of the reference for numeric columns
    psi_threshold: float = 0.2
    js_threshold: float = 0.1
    max_metric_drop: float = 0.1       # relative drop of offline NDCG or daily CTR that alerts


@dataclass(frozen=True)
class Config:
    """Every section, as loaded by `load_config`."""

    env: str = DEFAULT_ENV
    spark: SparkConfig = field(default_factory=SparkConfig)
    lake: LakeConfig = field(default_factory=LakeConfig)
    landing: LandingConfig = field(default_factory=LandingConfig)
    postgres: PostgresConfig = field(default_factory=PostgresConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    services: ServicesConfig = field(default_factory=ServicesConfig)
    datagen: DatagenConfig = field(default_factory=DatagenConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    gold: GoldConfig = field(default_factory=GoldConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    def require_secret(self, key: str) -> str:
        """Return a secret's value, or fail naming the environment variable that must hold it."""
        section, name = key.split(".", 1)
        value = getattr(getattr(self, section), name)
        if not value:
            raise ConfigError(f"{key} is required here: set it in the environment as {env_var(key)}")
        return value


# Annotations are strings here (`from __future__ import annotations`): `get_type_hints` resolves
# them to the real types, once.
SECTIONS: dict[str, type] = {name: tp for name, tp in typing.get_type_hints(Config).items() if name != "env"}
FIELD_TYPES: dict[str, dict[str, Any]] = {name: typing.get_type_hints(tp) for name, tp in SECTIONS.items()}


def env_var(key: str) -> str:
    """The environment variable that overrides `section.key`."""
    return ENV_PREFIX + "__".join(part.upper() for part in key.split(".", 1))


def default_conf_dir() -> Path:
    """`$RECSYS_CONF_DIR`, else `./conf`, else the `conf/` beside the package (a source checkout)."""
    if os.environ.get("RECSYS_CONF_DIR"):
        return Path(os.environ["RECSYS_CONF_DIR"])
    cwd_conf = Path.cwd() / "conf"
    if cwd_conf.is_dir():
        return cwd_conf
    return Path(__file__).resolve().parent.parent / "conf"


def load_config(
    env: str | None = None,
    overrides: Sequence[str] = (),
    *,
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load `conf/<env>.yaml` (or `config_file`), then apply environment and `--set` overrides."""
    environ = os.environ if environ is None else environ
    env = env or environ.get("RECSYS_ENV") or DEFAULT_ENV
    path = Path(config_file) if config_file else default_conf_dir() / f"{env}.yaml"
    if not path.is_file():
        raise ConfigError(f"config file {path} not found (env {env!r}; set RECSYS_ENV or --config)")

    raw: dict[tuple[str, str], tuple[Any, str]] = {}
    for key, value in _flatten(_read_yaml(path), str(path)):
        raw[key] = (value, str(path))
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX):
            parts = name[len(ENV_PREFIX):].lower().split("__", 1)
            key = (parts[0], parts[1] if len(parts) > 1 else "")
            raw[key] = (value, f"environment variable {name}")
    for item in overrides:
        dotted, sep, value = item.partition("=")
        if not sep or "." not in dotted:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        section, name = dotted.split(".", 1)
        raw[(section, name)] = (value, f"--set {dotted}")

    root = path.resolve().parent.parent
    return Config(env=env, **_build_sections(raw, root))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def _flatten(data: dict[str, Any], source: str) -> list[tuple[tuple[str, str], Any]]:
    items: list[tuple[tuple[str, str], Any]] = []
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a mapping of keys (from {source})")
        items.extend(((section, key), value) for key, value in values.items())
    return items


def _build_sections(raw: dict[tuple[str, str], tuple[Any, str]], root: Path) -> dict[str, Any]:
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for (section, key), (value, source) in raw.items():
        dotted = f"{section}.{key}"
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r} in {dotted} (from {source})")
        fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
        name, _, subkey = key.partition(".")
        if name not in fields:
            raise ConfigError(f"unknown config key {dotted!r} (from {source})")
        spec = fields[name]
        if spec.metadata.get("secret") and not source.startswith("environment"):
            raise ConfigError(
                f"{dotted} is a secret and may only come from the environment "
                f"({env_var(dotted)}), not from {source}"
            )
        if subkey:  # one entry of a mapping, e.g. --set spark.conf.spark.sql.ansi.enabled=true
            if _origin(FIELD_TYPES[section][name]) is not dict:
                raise ConfigError(f"{dotted}: {section}.{name} is not a mapping (from {source})")
            value_type = typing.get_args(FIELD_TYPES[section][name])[1]
            values[section].setdefault(name, {})[subkey] = _convert(value, value_type, dotted, source)
            continue
        converted = _convert(value, FIELD_TYPES[section][name], dotted, source)
        if spec.metadata.get("path"):
            converted = _resolve_path(converted, root)
        values[section][name] = converted
    return {name: SECTIONS[name](**kwargs) for name, kwargs in values.items()}


def _origin(tp: Any) -> Any:
    return typing.get_origin(tp) or tp


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """`value` (from YAML, the environment or `--set`) as type `tp`, or a `ConfigError` naming key and source."""
    origin = _origin(tp)
    converter = _CONVERTERS.get(origin)
    converted = converter(value, tp) if converter else _INVALID
    if converted is _INVALID:
        if origin is Literal:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, typing.get_args(tp)))} "
                              f"(from {source})")
        expected = {dict: "a mapping", tuple: "a list"}.get(origin) or getattr(origin, "__name__", str(origin))
        raise ConfigError(f"{key}: expected {expected}, got {value!r} (from {source})")
    if origin is tuple:
        items = typing.cast(list[Any], converted)
        return tuple(dict.fromkeys(_convert(item, typing.get_args(tp)[0], key, source) for item in items))
    if origin is dict:
        mapping = typing.cast(dict[Any, Any], converted)
        return {str(k): _convert(v, typing.get_args(tp)[1], f"{key}.{k}", source) for k, v in mapping.items()}
    return converted


_INVALID = object()


def _to_bool(value: Any, _tp: Any) -> Any:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    return text in _TRUE if text in _TRUE | _FALSE else _INVALID


def _to_number(value: Any, tp: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return _INVALID
    if isinstance(value, float) and tp is int:
        return _INVALID
    try:
        return tp(value.strip() if isinstance(value, str) else value)
    except ValueError:
        return _INVALID


def _to_str(value: Any, _tp: Any) -> Any:
    return str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else _INVALID


def _to_literal(value: Any, tp: Any) -> Any:
    text = value.strip() if isinstance(value, str) else value
    return text if text in typing.get_args(tp) else _INVALID


def _to_items(value: Any, _tp: Any) -> Any:
    """A list's items, still unconverted: a YAML list, or a comma string."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value) if isinstance(value, list | tuple) else _INVALID


_CONVERTERS: dict[Any, Callable[[Any, Any], Any]] = {
    bool: _to_bool, int: _to_number, float: _to_number, str: _to_str, Literal: _to_literal,
    tuple: _to_items, dict: lambda value, _tp: value if isinstance(value, dict) else _INVALID,
}


def _resolve_path(value: str, root: Path) -> str:
    """Relative local paths are relative to the project root; URIs and absolute paths stay."""
    if not value or "://" in value or value.startswith(("dbfs:", "/")):
        return value
    return str((root / value).resolve())
