"""Typed settings from the environment (prefix SGBUS_), one object for the whole process."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting has a safe default for the local stack; override with SGBUS_* variables."""

    model_config = SettingsConfigDict(env_prefix="SGBUS_", extra="ignore", hide_input_in_errors=True)

    home: Path = Field(default=Path(".sgbus"), description="state of the local stack and keys")
    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers; default: the local stack's"
    )
    kafka_principal: str | None = Field(
        default=None, description="which of the local stack's principals to act as; default: the command's own"
    )
    kafka_username: str | None = Field(
        default=None, description="SCRAM user name (a partner's own deployment); default: from the local stack"
    )
    kafka_password: SecretStr | None = Field(default=None, description="SCRAM password of kafka_username")
    ca_file: Path | None = Field(
        default=None,
        description="PEM file of the partnership CA that checks the broker's and OPA's certificates; "
                    "default: $SGBUS_HOME/pki/ca.pem",
    )
    opa_url: str | None = Field(default=None, description="OPA base URL; default: the local stack's")
    opa_token: SecretStr | None = Field(
        default=None, description="OPA bearer token; default: the local stack's token for the command's role"
    )
    policies_dir: Path = Field(default=Path("policies"), description="Rego policies and data")
    keyring: Path | None = Field(default=None, description="key file; default: $SGBUS_HOME/keyring.json")
    keyring_json: SecretStr | None = Field(
        default=None, description="the keyring itself (JSON), e.g. from a secret store; wins over the file"
    )
    audit_signing_key_json: SecretStr | None = Field(
        default=None, description="the audit checkpoint signing key (JSON) from a secret store; default: "
                                  "$SGBUS_HOME/audit-signing/signing-key.json (audit stage only)")
    audit_public_keys: Path | None = Field(
        default=None, description="public keys that verify audit checkpoints; default: "
                                  "$SGBUS_HOME/audit-signing/public-keys.json")
    audit_db: Path | None = Field(default=None, description="audit store (SQLite); default: $SGBUS_HOME/audit.db")
    audit_dsn: SecretStr | None = Field(
        default=None, description="PostgreSQL DSN of the audit store; when set, used instead of SQLite"
    )
    audit_verify_interval_s: float = Field(
        default=300.0, ge=1, description="how often the audit stage verifies the chain with the public keys (the "
                                         "whole chain, unless the next setting is set; sgbus_audit_chain_verified; "
                                         "alert SgbusAuditChainVerificationFailed)")
    audit_anchor: Literal["none", "published"] = Field(
        default="none", description="published: at start, the audit stage reads the newest validly signed head on "
                                    "sg.audit.heads and refuses to sign on while the store no longer holds it (a chain "
                                    "cut back or rewritten in the database while the stage was down); set in "
                                    "production (the Helm chart does); none: from the first head it publishes")
    audit_full_verify_interval_s: float | None = Field(
        default=None, ge=1, le=7 * 86400,
        description="how often the audit stage walks the whole chain, walking only what was appended in between (a "
                    "whole walk costs ~17-50 µs a record); unset: every walk is whole. Only a whole walk catches an "
                    "old row altered in place, so at most a week: longer would leave such an edit unseen for longer "
                    "than an insider needs to put the row back")
    concern_enabled: bool = Field(
        default=True, description="run the multi-agency concern agent in `sgbus worker` (the benchmark turns it off "
                                  "to measure the sharing pipe alone)")
    concern_org_id: str = Field(default="SGBUS", description="org_id the concern stage publishes as (its partner "
                                                             "entry's, agency bus)")
    concern_signing_key: Path | None = Field(
        default=None, description="the concern stage's signing key file (`sgbus partners keys issue --out`); "
                                  "default: the local stack's key for concern_org_id")
    prometheus_url: str | None = Field(
        default=None, description="Prometheus for `sgbus status`; default: the local stack's")
    alertmanager_url: str | None = Field(
        default=None, description="Alertmanager for `sgbus status`; default: the local stack's")
    monitoring_username: str | None = Field(
        default=None, description="operator login for SGBUS_PROMETHEUS_URL / SGBUS_ALERTMANAGER_URL")
    monitoring_password: SecretStr | None = Field(default=None, description="its password")
    app_id: str = Field(default="sgbus", description="Faust app id (consumer group)")
    metrics_port: int = Field(default=0, description="Prometheus /metrics port (0: pick a free one)")
    metrics_host: str = Field(default="127.0.0.1", description="address /metrics listens on (0.0.0.0 in a pod, "
                                                              "where Prometheus and the probes reach it; TLS and "
                                                              "client certificates either way)")
    metrics_tls_cert: Path | None = Field(
        default=None, description="certificate (PEM) /metrics is served with; default: the local stack's")
    metrics_tls_key: Path | None = Field(default=None, description="its private key (PEM)")
    metrics_client_ca: Path | None = Field(
        default=None, description="CA whose client certificates may read /metrics; default: SGBUS_CA_FILE")
    batch_size: int = Field(default=100, ge=1, le=1000, description="events per policy query")
    batch_window_s: float = Field(
        default=0.05, gt=0, le=5,
        description="longest a batch waits for more events after its first one arrived (at light load, much "
                    "less: bus/agents/batching.py)")
    worker_batch_size: int = Field(
        default=250, ge=1, le=5000,
        description="events the all-in-one worker takes in one batch under load (its policy queries still hold at "
                    "most batch_size events each): per-batch costs (the hand-over to and from its helper processes, "
                    "the event id register's commit) are shared by more events",
    )
    # Faust's default, 4,096, kept the all-in-one worker over 200 MB on a deep backlog: 100,000-event
    # backfills peaked at 205-208 MB with it, 191-203 MB with 1,500, at the same speed (1,558-1,615
    # against 1,590-1,710 events/s, alternating runs; docs/BENCHMARKS.md session 25); 500 was ~10% slower.
    worker_stream_buffer: int = Field(
        default=1500, ge=100, le=100_000,
        description="records the all-in-one worker's Faust streams hold ahead of its agents (Faust's "
                    "stream_buffer_maxsize): a deep backlog fills the buffer, so this bounds the worker's memory",
    )
    stage_batch_size: int = Field(
        default=500, ge=1, le=5000,
        description="events per Kafka transaction in exactly-once stage workers (worker --stage)",
    )
    fetch_max_wait_ms: int = Field(
        default=100, ge=1, le=5000, description="longest a worker's Kafka fetch waits for new records"
    )
    fetch_linger_ms: int = Field(
        default=20, ge=0, le=1000,
        description="while records flow, how long a worker's Kafka fetch waits for more before it returns "
                    "(0: at the first record; after an empty fetch, always at the first; at most fetch_max_wait_ms: "
                    "bus/fetch_linger.py)")
    route_at_ingest: bool = Field(
        default=True,
        description="the all-in-one worker routes each event in the batch that ingested it, without a second "
                    "Kafka hop, and reads only replays (sg.replay), not sg.events (stage workers always take the "
                    "hop); before turning it on, let the worker route what it has on sg.events")
    ingest_process: bool = Field(
        default=False,
        description="the all-in-one worker parses, verifies, pseudonymises and redacts each batch in a second "
                    "process while it routes the batch before (more events/s where a core is spare; ~80 MB more "
                    "memory in all); the ingest stage worker does that work in a second process too, one batch at "
                    "a time (each process then stays small)")
    librdkafka_sends: bool = Field(
        default=True,
        description="the all-in-one worker sends through librdkafka (confluent-kafka) rather than Faust's aiokafka "
                    "producer: its records leave from librdkafka's own threads, off the worker's event loop "
                    "(bus/agents/direct_producer.py); false: through Faust's producer, as before")
    librdkafka_linger_ms: float = Field(
        default=1.0, ge=0, le=100,
        description="how long librdkafka waits for more of the all-in-one worker's records before it sends a "
                    "request (linger.ms)")
    audit_process: bool = Field(
        default=False,
        description="the worker that runs the audit stage (all-in-one or `--stage audit`) decodes, chains, stores "
                    "and signs each audit batch in a second process, off its event loop (more events/s where a core "
                    "is spare; ~60 MB more memory in all)")
    session_timeout_s: float = Field(
        default=15.0, ge=10, le=300,
        description="how long a worker that stopped answering keeps its Kafka partitions before its consumer "
                    "group hands them to the others (after a crash, sharing resumes about this much later)")
    decision_cache_size: int = Field(
        default=10_000, ge=0, le=1_000_000,
        description="decisions a route worker keeps for requests policy cannot tell apart (0: ask OPA every time)")
    opa_timeout_s: float = Field(default=2.0, gt=0, description="timeout of one OPA query")
    retry_max_backoff_s: float = Field(default=5.0, gt=0, description="cap of the OPA retry backoff")
    log_level: str = Field(default="info", description="worker log level")
    shutdown_grace_s: float = Field(
        default=15.0, gt=0, le=300, description="longest a worker takes to stop on SIGTERM/SIGINT before it exits "
                                                "anyway (uncommitted work is processed again)")
    gateway_url: str | None = Field(
        default=None, description="the gateway's base URL for `sgbus gateway send|mailbox|status`; default: the "
                                  "local gateway's (from $SGBUS_HOME/gateway/gateway.json)")
    gateway_tls_cert: Path | None = Field(
        default=None, description="the gateway's server certificate chain (PEM); default: the local stack's")
    gateway_tls_key: Path | None = Field(default=None, description="the key of gateway_tls_cert (PEM)")
    gateway_partner_certs: Path | None = Field(
        default=None, description="the partner certificate register the gateway reads (which certificate speaks "
                                  "for which partner, which are revoked); default: $SGBUS_HOME/pki/partner-certs.json")
    gateway_receipts_dir: Path | None = Field(
        default=None, description="where the gateway keeps its receipt store (created 0700); default: "
                                  "$SGBUS_HOME/gateway")
    gateway_rate: float = Field(default=500.0, gt=0, description="events a second each partner may publish")
    gateway_burst: int = Field(default=1000, ge=1, description="events a partner may publish at once")

    @property
    def audit_db_path(self) -> Path:
        return self.audit_db if self.audit_db is not None else self.home / "audit.db"

    @property
    def keyring_path(self) -> Path:
        return self.keyring if self.keyring is not None else self.home / "keyring.json"
