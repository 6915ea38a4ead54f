"""Farm settings: the one place configuration is read, from ``MATTEFARM_*`` environment variables.

Every field has a documented default that gives the embedded farm (SQLite + a local
filesystem broker under ``data_dir``), so ``mattefarm up`` works with nothing installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from farm_config.colour_defaults import DEFAULT_DISPLAY, DEFAULT_OCIO_CONFIG, DEFAULT_VIEW
from farm_config.profiles import PROFILES, get_profile

ModelBackend = Literal["synthetic", "sam2-gdino", "shadow"]
WeightsMode = Literal["official", "random"]
Sam2Size = Literal["tiny", "small", "base_plus", "large"]


@dataclass(frozen=True)
class TokenGrant:
    """Who an API token acts as."""

    user: str
    is_admin: bool


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Typed farm configuration. Build it with :func:`get_settings`, never at import."""

    model_config = SettingsConfigDict(env_prefix="MATTEFARM_", extra="ignore")

    environment: Literal["dev", "production"] = Field(
        "dev", description="'production' refuses the embedded broker/database defaults."
    )
    data_dir: Path = Field(
        Path(".mattefarm"),
        description="Embedded-mode state: SQLite database, local broker folders, the dev token.",
    )
    database_url: str = Field("", description="SQLAlchemy URL; empty = sqlite in data_dir.")
    db_pool_size: int = Field(
        20, ge=1, le=200, description="Database connections each process keeps (and as many again at peaks)."
    )
    db_ping_idle_s: float = Field(
        1.0,
        ge=0,
        description="A pooled connection idle longer than this is pinged before use, and replaced if the "
        "database dropped it; one reused sooner is not (a ping is a round trip per request under load). "
        "0: ping on every use.",
    )
    broker_url: str = Field(
        "", description="Celery broker URL (redis://...); empty = local filesystem broker in data_dir."
    )

    # Paths a job may read plates from and write mattes to.
    read_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path.cwd()], description="Comma-separated plate roots."
    )
    write_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path.cwd()], description="Comma-separated output roots."
    )

    # "token:user" or "token:user:admin", comma-separated. Tokens can also be kept hashed in the
    # database (`mattefarm tokens add`), with an expiry and revocation.
    tokens: Annotated[list[str], NoDecode] = Field(default_factory=list, repr=False)
    token_cache_s: float = Field(
        10.0,
        ge=0,
        description="How long an API process trusts a database token it found: a revoked or expired "
        "token stops working within this many seconds (0: look up on every request).",
    )

    # Queue behaviour for long GPU tasks (see docs/queue.md).
    task_soft_time_limit_s: int = Field(6 * 3600, ge=60)
    task_time_limit_s: int = Field(6 * 3600 + 600, ge=60)
    visibility_timeout_s: int = Field(8 * 3600, ge=60)
    max_attempts: int = Field(3, ge=1, le=20, description="Attempts per task before it is dead.")
    gpu_queue: str = Field("gpu", description="GPU queue, or the prefix of per-class ones (gpu.a4000).")
    cpu_queue: str = "cpu"
    worker_profile: str | None = Field(None, description="a4000, h100 or cpu: a worker's queue and model defaults.")
    worker_queues: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Queues this worker consumes; default: its profile's (or gpu,cpu)."
    )
    task_frames: int = Field(50, ge=1, le=10000, description="Frames per task for detect, segment and export.")
    max_tasks_per_stage: int = Field(
        200, ge=1, le=100_000, description="Most tasks one stage of a job may have (a submit's task_frames is checked)."
    )
    heartbeat_s: float = Field(5.0, gt=0, le=300, description="How often workers report liveness and progress.")
    heartbeat_timeout_s: float = Field(
        60.0, gt=0, description="A running task silent this long is retried elsewhere (its worker is dead)."
    )
    history_sample_s: float = Field(
        60.0, ge=1, le=3600, description="How often the dispatcher records the farm's load for the history graphs."
    )
    worker_forget_after_s: float = Field(
        3600.0,
        ge=60,
        description="A worker offline this long leaves the worker list and /metrics (a node that comes back "
        "registers again under the same name: node:slot).",
    )
    lost_message_s: float = Field(
        60.0, gt=0, description="A queued task whose message the broker no longer holds after this long is re-sent."
    )
    dispatch_every_s: float = Field(2.0, gt=0, le=60, description="The dispatcher/reconciler's period.")
    dispatcher: bool = Field(True, description="Run the dispatcher in the API process; else 'mattefarm dispatcher'.")
    retry_backoff_s: float = Field(10.0, ge=0, description="First retry's delay; doubles per attempt (± 20 %).")
    retry_backoff_max_s: float = Field(600.0, ge=0)
    blocklist_after: int = Field(3, ge=1, description="A host failing this many of a job's tasks gets no more of them.")
    show_gpu_caps: dict[str, int] = Field(
        default_factory=dict, description='Concurrent GPU tasks per show, JSON: {"showA": 4}.'
    )
    offload_state_to_cpu: bool = Field(False, description="SAM2 tracking state in host memory (16 GB cards).")
    fault: str = Field(
        "",
        description="Fire drills only: 'crash@STAGE', 'exit@STAGE' or 'oom@STAGE' make that stage's tasks fail; "
        "'kill@STAGE:N' SIGKILLs the worker when a task of STAGE (or 'finalise') reaches frame N on its first attempt.",
    )

    # Models.
    model_backend: ModelBackend = "sam2-gdino"
    weights: WeightsMode = "official"
    sam2_size: Sam2Size = "large"
    models_dir: Path = Field(Path("~/.cache/mattefarm/models").expanduser())
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    gdino_text_encoder: Literal["bert-base", "bert-tiny"] = Field(
        "bert-base",
        description="Random-weights mode only: the size of the generated BERT text encoder.",
    )

    sam2_image_size: int | None = Field(
        None, ge=256, le=2048, description="Override SAM2's input size (default: the model's 1024); CPU benchmarks."
    )
    feature_cache_mb: int = Field(
        512,
        ge=0,
        description="Host memory for SAM2 image features (≈8.4 MB a frame); frames beyond it are re-encoded.",
    )
    detector_short_side: int = Field(
        800, ge=320, le=2048, description="GroundingDINO input short side (its training scale is 800)."
    )
    detector_max_side: int = Field(1333, ge=320, le=4096, description="GroundingDINO input long-side cap.")
    detector_batch_frames: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Frames GroundingDINO takes in one forward pass (one caption, one plate size). Unset: 4 on "
        "a GPU (fewer, larger kernels; not yet measured on one), 1 on CPU, where 4 frames per forward took "
        "1.06-1.3x longer per frame on 2 cores and 8 took 1.9x (memory-bound). Activation memory grows with "
        "the batch.",
    )
    synthetic_delay_s: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description="Synthetic backend only: seconds each model call sleeps, to mimic GPU time in demos and tests.",
    )

    # plate decoding and colour
    exr_colourspace: str = Field(
        "ACEScg",
        description="Colour space of EXR plates whose header does not say (ACEScg or 'Linear Rec.709 (sRGB)').",
    )
    ocio_config: str = Field(
        DEFAULT_OCIO_CONFIG,
        description="OCIO config: a pinned built-in URI (nothing to download) or a config path.",
    )
    ocio_display: str = Field(DEFAULT_DISPLAY, description="OCIO display the models see.")
    ocio_view: str = Field(DEFAULT_VIEW, description="OCIO view transform applied for the models.")
    use_ocio: bool = Field(True, description="False: a plain linear→sRGB curve instead of OpenColorIO.")
    decode_threads: int = Field(2, ge=0, le=32, description="Plate decoders running ahead of the GPU (0: inline).")
    decode_ahead: int = Field(4, ge=0, le=64, description="Frames decoded ahead of the one the models need.")
    frame_cache_mb: int = Field(
        1024,
        ge=0,
        le=65536,
        description="Memory for decoded working-resolution frames per task: a shot that fits is decoded once "
        "per stage (tracking goes forward and backward over each frame several times); a longer one keeps "
        "two windows' worth.",
    )
    exr_threads: int = Field(0, ge=0, le=256, description="OpenEXR (de)compression threads per process; 0 = all cores.")
    # review media
    review: bool = Field(True, description="Write the review MP4 and contact sheet after the mattes.")
    review_max_side: int = Field(1920, ge=128, le=8192, description="Longest side of review media, px.")
    review_fps: float = Field(24.0, gt=0.0, le=240.0, description="Review frame rate when the plate has none.")

    api_host: str = Field("127.0.0.1", description="Where the API listens.")
    api_port: int = Field(8321, ge=1, le=65535)
    api_workers: int = Field(
        2,
        ge=1,
        le=64,
        description="API processes (`mattefarm api`): Python serves one request at a time per process, so about "
        "one per core. Each runs its own dispatcher loop (they coordinate through the database).",
    )
    auth_failures_limit: int = Field(
        20, ge=1, description="Failed sign-ins from one address within the window before it gets 429s."
    )
    auth_failures_window_s: float = Field(60.0, gt=0, description="The window of AUTH_FAILURES_LIMIT, seconds.")
    api_access_log: bool = Field(False, description="Log every request (uvicorn's access log); costs ~10 % at load.")
    page_size_max: int = Field(200, ge=1, description="Most jobs one list request returns.")
    plate_checks_cached: int = Field(
        256,
        ge=0,
        le=100_000,
        description="Plates an API process remembers having validated, each while its folder and first and last "
        "frames are unchanged on disk (a resubmitted plate skips the folder listing, header reads and colour "
        "set-up); 0 checks every plate on every submit.",
    )
    # artist refinement: clicks answered in the API process, propagations on workers
    refine_sessions: int = Field(8, ge=1, le=256, description="Jobs held open for refinement at once per API process.")
    refine_frames_cached: int = Field(
        64, ge=4, le=4096, description="Working-resolution frames a refinement session keeps decoded (≈1.8 MB each)."
    )
    refine_queue: str = Field(
        "gpu",
        description="Queue propagations are sent to: served by workers with the tracker loaded. A queue of its own "
        "(e.g. 'refine', with a GPU worker listening) keeps an artist's propagation from waiting behind batch tasks.",
    )
    refine_stale_s: float = Field(
        30.0, gt=0, description="A propagation whose worker has not reported for this long is sent to another worker."
    )
    refine_attempts: int = Field(3, ge=1, le=10, description="Workers a propagation may start on before it fails.")
    # webhooks (per-job notify_url)
    webhook_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts (names, addresses or CIDR ranges) a notify_url may point at even when private; other "
        "URLs must resolve to public addresses only (loopback, link-local and private ranges are refused: SSRF).",
    )
    webhook_secret: str = Field(
        "",
        repr=False,
        description="HMAC-SHA256 key signing every webhook (X-Mattefarm-Signature); empty = one made in data_dir. "
        "Set it on every process of a farm that spans machines.",
    )
    # review media links that open without a token header (RV, a browser, an email)
    review_link_secret: str = Field(
        "",
        repr=False,
        description="HMAC-SHA256 key signing review links; empty = one made in data_dir. Set it on every API "
        "process of a farm that spans machines (a link signed by one must open on all).",
    )
    review_link_ttl_s: int = Field(
        24 * 3600, ge=60, le=7 * 24 * 3600, description="How long a signed review link opens, by default."
    )
    # the CLI's side: which farm it talks to and as whom
    api_url: str = Field("", description="The farm the CLI talks to; empty = http://API_HOST:API_PORT.")
    token: str = Field("", repr=False, description="The CLI's token; empty = the embedded farm's token file.")
    # a worker process's identity and start-up
    worker_node: str = Field(
        "", description="Celery node name (node@host); workers are named node:slot, stable across restarts."
    )
    warm_models: bool = Field(True, description="Load the models when a worker process starts, not on its first task.")

    @field_validator("read_roots", "write_roots", "tokens", "worker_queues", "webhook_hosts", mode="before")
    @classmethod
    def _lists_from_env(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("worker_profile")
    @classmethod
    def _known_profile(cls, profile: str | None) -> str | None:
        if profile is not None and profile not in PROFILES:
            raise ValueError(f"MATTEFARM_WORKER_PROFILE: unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
        return profile

    @field_validator("fault")
    @classmethod
    def _fault_drill(cls, fault: str) -> str:
        kind, _, where = fault.partition("@")
        stage, _, frame = where.partition(":")
        stages = ("detect", "segment", "track", "export", "finalise")
        drills = ("crash", "exit", "oom") if not frame else ("kill",)
        if fault and (kind not in drills or stage not in stages or (frame and not frame.isdigit())):
            raise ValueError(
                f"MATTEFARM_FAULT must be crash@STAGE, exit@STAGE, oom@STAGE or kill@STAGE:FRAME with STAGE in {stages}"
            )
        return fault

    @field_validator("read_roots", "write_roots")
    @classmethod
    def _absolute_roots(cls, roots: list[Path]) -> list[Path]:
        return [Path(os.path.realpath(Path(r).expanduser())) for r in roots]

    @field_validator("tokens")
    @classmethod
    def _token_shape(cls, tokens: list[str]) -> list[str]:
        for entry in tokens:
            parts = entry.split(":")
            if len(parts) not in (2, 3) or not all(parts[:2]) or (len(parts) == 3 and parts[2] != "admin"):
                raise ValueError("MATTEFARM_TOKENS entries must look like 'token:user' or 'token:user:admin'")
            if len(parts[0]) < 16:
                raise ValueError("MATTEFARM_TOKENS: each token must be at least 16 characters")
        return tokens

    @model_validator(mode="after")
    def _limits_and_production(self) -> Settings:
        if self.task_time_limit_s <= self.task_soft_time_limit_s:
            raise ValueError("MATTEFARM_TASK_TIME_LIMIT_S must be above MATTEFARM_TASK_SOFT_TIME_LIMIT_S")
        # Redis redelivers any unacked message older than the visibility timeout, even one
        # still running, so a shorter timeout runs a long shot twice at once.
        if self.visibility_timeout_s <= self.task_time_limit_s:
            raise ValueError("MATTEFARM_VISIBILITY_TIMEOUT_S must be above MATTEFARM_TASK_TIME_LIMIT_S")
        if self.environment == "production":
            if not self.database_url or self.database_url.startswith("sqlite"):
                raise ValueError("production needs MATTEFARM_DATABASE_URL (postgresql+psycopg://...)")
            if not self.broker_url.startswith(("redis://", "rediss://")):
                raise ValueError("production needs MATTEFARM_BROKER_URL=redis://...")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'mattefarm.db').resolve()}"

    @property
    def webhook_secret_path(self) -> Path:
        return self.data_dir / "webhook_secret"

    @property
    def review_link_secret_path(self) -> Path:
        return self.data_dir / "review_link_secret"

    @property
    def consumed_queues(self) -> list[str]:
        """The queues a worker started with these settings consumes: as given, else its profile's
        (or gpu and cpu), with the refine queue on every GPU worker (its tracker is warm)."""
        if self.worker_queues:
            return list(self.worker_queues)
        queues = [get_profile(self.worker_profile).queue] if self.worker_profile else [self.gpu_queue, self.cpu_queue]
        gpu = any(q == self.gpu_queue or q.startswith(f"{self.gpu_queue}.") for q in queues)  # gpu, gpu.a4000…
        if gpu and self.refine_queue not in queues:
            queues.append(self.refine_queue)
        return queues

    @property
    def resolved_api_url(self) -> str:
        return self.api_url.rstrip("/") or f"http://{self.api_host}:{self.api_port}"

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def uses_local_broker(self) -> bool:
        return not self.broker_url or self.broker_url.startswith("filesystem://")

    def token_grants(self) -> dict[str, TokenGrant]:
        grants: dict[str, TokenGrant] = {}
        for entry in self.tokens:
            parts = entry.split(":")
            grants[parts[0]] = TokenGrant(parts[1], len(parts) == 3)
        dev_token = self.dev_token_path
        if not grants and self.environment == "dev" and dev_token.exists():
            token = dev_token.read_text().strip()
            if token:
                grants[token] = TokenGrant(os.environ.get("USER") or "dev", True)
        return grants

    @property
    def dev_token_path(self) -> Path:
        return self.data_dir / "token"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, built once on first use (tests clear the cache)."""
    return Settings()
