"""What a sandbox org is started with: credentials, schema switches, API allowance, seed, faults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MARKETO_FIELD = "mkto_si__Marketo_Sales_Opt_Out__c"
API_VERSION = "59.0"


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """Settings of one sandbox org; every field has a usable default for tests."""

    host: str = "127.0.0.1"
    port: int = 0
    username: str = "integration@optout-sync.sandbox"
    # Fixed, sandbox-only credentials: clients read them from --print-env.
    password: str = "sandbox-password"  # noqa: S105
    security_token: str = "SANDBOXTOKEN"  # noqa: S105
    consumer_key: str = "sandbox-consumer-key"
    consumer_secret: str = "sandbox-consumer-secret"  # noqa: S105
    # None removes the Marketo Sales Insight field from both objects (the "field missing" case).
    marketo_field: str | None = DEFAULT_MARKETO_FIELD
    daily_api_limit: int = 100_000
    admin_enabled: bool = False
    seed_file: Path | None = None
    generate: int = 0
    snapshot_file: Path | None = None
    # Where the CA and server certificate are written; None means a fresh temporary directory.
    tls_dir: Path | None = None
    # Fault specs applied at start, same shape as the admin endpoint's body.
    faults: tuple[dict[str, object], ...] = field(default_factory=tuple)
    query_page_size: int = 2000
    # Bytes of URI (path and query string) plus headers a REST call may carry (help article 000386264).
    uri_limit: int = 16_384
    collection_limit: int = 200
    bulk_chunk_rows: int = 5000
    call_log_size: int = 500_000
