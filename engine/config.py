"""Configuration: where it is found, how it is validated, and the one writer that saves it.

Lookup order: --config PATH > $CAPGUARD_CONFIG > $XDG_CONFIG_HOME/capguard/config.toml >
the bundled default (config.toml, shipped inside the wheel). The file is read with tomlkit
and validated by pydantic models that refuse unknown keys. An invalid file raises
ConfigError with one message naming the key and the problem.

Writing back (threshold edits from the console or the API) goes through `ConfigWriter`:
the change is applied to the tomlkit document so comments and layout are kept, the result
is validated whole, then written atomically (temporary file + rename). When the file in
force is the read-only bundled default, it is first copied to the user's config path.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomlkit
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from tomlkit.exceptions import ParseError
from tomlkit.toml_document import TOMLDocument

from engine.alerts.config import AlertsConfig
from engine.analytics.maintenance import VolatilityAdjustment
from engine.analytics.margin_methods import MarginMethods
from engine.analytics.stress import NAMED_SCENARIOS, StressScenario
from engine.api.config import ApiConfig
from engine.connectors.base import BrokerConfig, SourcesConfig
from engine.ladder import LadderConfig
from engine.levels import Thresholds
from engine.model import Instrument
from engine.quality import DataQualityConfig
from engine.sim.config import SimulatorConfig
from engine.thresholds import DynamicThresholdsConfig

EX_CONFIG = 78  # sysexits: configuration error


class ConfigError(Exception):
    """The configuration was refused; the message names the file, the key and the problem."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConsoleConfig(Strict):
    theme: str = "dark"
    refresh_hz: float = Field(default=4.0, gt=0, le=30)
    keys: dict[str, str] = Field(default_factory=dict, description="console action id -> key(s), comma-separated")


class GuardConfig(Strict):
    protection_mode: Literal["active", "shadow"] = "active"
    shadow_accounts: list[str] = Field(default_factory=list)
    sample_interval: float = Field(default=5.0, gt=0, description="seconds between ratio-history samples")
    sample_interval_warning: float = Field(default=1.0, gt=0, description="the same at WARNING or worse")
    journal: str | None = None


class DeleverageConfig(Strict):
    strategy: Literal["proportional", "risk", "time", "market"] = "risk"
    method: Literal["market", "limit", "stop", "twap"] = "market"
    target_buffer: float = Field(default=0.1, ge=0, le=5, description="target ratio = warning threshold + this")
    cooldown: float = Field(default=5.0, ge=0, description="seconds between automatic rounds")
    max_rounds: int = Field(default=5, ge=1, le=100)


class LiquidationConfig(Strict):
    mode: Literal["immediate", "orderly"] = "orderly"
    priority: Literal["risk", "size", "market", "time"] = "risk"
    retry_after: float = Field(default=10.0, gt=0, description="seconds before an incomplete liquidation retries")
    slice_interval: float = Field(default=1.0, gt=0, le=600, description="orderly: seconds between slices")
    deadline: float = Field(default=60.0, gt=0, le=3600, description="orderly: seconds before the rest goes at market")


class LimitsConfig(Strict):
    max_leverage: float | None = Field(default=None, gt=0)
    max_drawdown: float | None = Field(default=None, gt=0, lt=1)


class CircuitBreakerConfig(Strict):
    enabled: bool = True
    count: int = Field(default=5, ge=1, description="accounts entering CRITICAL or worse within the window")
    share: float = Field(default=0.3, gt=0, le=1, description="or this share of all accounts")
    window: float = Field(default=30.0, gt=0)


class RolesConfig(Strict):
    default: Literal["viewer", "trader", "risk"] = "viewer"
    users: dict[str, Literal["viewer", "trader", "risk"]] = Field(default_factory=dict)


class MaintenanceAddonsConfig(Strict):
    """Opt-in maintenance-margin add-ons (engine.analytics.maintenance), each reported on its own.
    When enabled they are added to the maintenance margin the guard's ratio uses."""

    volatility: VolatilityAdjustment | None = None
    impact: bool = False


class RiskConfig(Strict):
    """Risk analytics: VaR/ES settings, named stress scenarios, margin methods, MM add-ons."""

    confidence: float = Field(default=0.99, gt=0.5, lt=1)
    horizon_days: float = Field(default=1.0, gt=0, le=30, description="square-root-of-time scaling from 1 day")
    mc_paths: int = Field(default=10_000, ge=100, le=1_000_000)
    seed: int = 1
    distribution: Literal["normal", "student_t"] = "normal"
    scenarios: list[StressScenario] = Field(default_factory=lambda: list(NAMED_SCENARIOS))
    margin: MarginMethods = Field(default_factory=MarginMethods)
    maintenance: MaintenanceAddonsConfig = Field(default_factory=MaintenanceAddonsConfig)

    @model_validator(mode="after")
    def _unique_names(self) -> RiskConfig:
        names = [s.name for s in self.scenarios]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"stress scenario named twice: {', '.join(twice)}")
        return self


class Config(Strict):
    thresholds: Thresholds = Field(default_factory=Thresholds)
    dynamic_thresholds: DynamicThresholdsConfig = Field(default_factory=DynamicThresholdsConfig)
    ladder: LadderConfig = Field(default_factory=LadderConfig)
    data_quality: DataQualityConfig = Field(default_factory=DataQualityConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    deleverage: DeleverageConfig = Field(default_factory=DeleverageConfig)
    liquidation: LiquidationConfig = Field(default_factory=LiquidationConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    roles: RolesConfig = Field(default_factory=RolesConfig)
    overrides: dict[str, Thresholds] = Field(default_factory=dict)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    instruments: list[Instrument] = Field(default_factory=list)
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        symbols = [i.symbol for i in self.instruments]
        seen: set[str] = set()
        for s in symbols:
            if s in seen:
                raise ValueError(f"instrument {s} is listed twice")
            seen.add(s)
        for s in self.simulator.markets:
            if s not in seen:
                raise ValueError(f"simulator.markets.{s}: no instrument with that symbol")
        return self


def bundled_config_path() -> Path:
    """The default config.toml: inside the wheel (engine/data/) or at the source tree's root."""
    here = Path(__file__).resolve().parent
    packaged = here / "data" / "config.toml"
    return packaged if packaged.exists() else here.parent / "config.toml"


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "capguard" / "config.toml"


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "capguard"


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "capguard"


def find_config(explicit: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The configuration file in force and why: (path, source)."""
    if explicit:
        return Path(explicit), "--config"
    env = os.environ.get("CAPGUARD_CONFIG")
    if env:
        return Path(env), "$CAPGUARD_CONFIG"
    user = user_config_path()
    if user.exists():
        return user, "user config"
    return bundled_config_path(), "bundled default"


def _location(loc: tuple[Any, ...], data: Any) -> str:
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            node = node[item] if isinstance(node, list) and item < len(node) else None
            name = node.get("id") or node.get("symbol") if isinstance(node, dict) else None
            parts.append(label + (f" ({name})" if isinstance(name, str) else ""))
        else:
            node = node.get(item) if isinstance(node, dict) else None
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def describe_validation_error(exc: ValidationError, data: Any) -> str:
    lines = []
    for err in exc.errors():
        where = _location(err["loc"], data)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{where}: {msg}" if where else msg)
    return "; ".join(lines)


def parse_config(text: str, origin: str = "<config>") -> tuple[Config, TOMLDocument]:
    try:
        doc = tomlkit.parse(text)
    except ParseError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
    data = doc.unwrap()
    try:
        return Config.model_validate(data), doc
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {describe_validation_error(exc, data)}") from None


def load_config(explicit: str | os.PathLike[str] | None = None) -> LoadedConfig:
    path, source = find_config(explicit)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration ({exc.strerror})") from None
    config, doc = parse_config(text, str(path))
    return LoadedConfig(config=config, path=path, source=source, document=doc)


@dataclass
class LoadedConfig:
    config: Config
    path: Path
    source: str
    document: TOMLDocument

    @property
    def is_bundled(self) -> bool:
        return self.path.resolve() == bundled_config_path().resolve()


class ConfigWriter:
    """The one place that writes the configuration back to disk."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded

    def update(self, edit: Callable[[TOMLDocument], None]) -> Config:
        """Apply `edit` to a copy of the document, validate it whole, and write it atomically.

        Nothing is written when validation fails (ConfigError). Returns the new Config.
        """
        doc = tomlkit.parse(tomlkit.dumps(self.loaded.document))
        edit(doc)
        text = tomlkit.dumps(doc)
        target = self.loaded.path
        if self.loaded.is_bundled:
            target = user_config_path()
        config, doc = parse_config(text, str(target))
        # The bundled default is read-only: the edited copy (its comments kept) becomes the
        # user's config file, which the lookup order prefers from then on.
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".toml", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.loaded = LoadedConfig(config=config, path=target, source=self.loaded.source, document=doc)
        return config

    def set_value(self, dotted: str, value: Any) -> Config:
        """Set a key such as `thresholds.warning` or `accounts.acct-7.thresholds.warning`."""
        keys = dotted.split(".")

        def edit(doc: TOMLDocument) -> None:
            node: Any = doc
            for key in keys[:-1]:
                if key not in node:
                    node[key] = tomlkit.table()
                node = node[key]
            node[keys[-1]] = value

        return self.update(edit)
