"""Runtime settings: one frozen object read from the environment (prefix STREAMS_).

Nothing here is read at import; call `Settings()` (or `load_settings`) where it is needed.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from confluent_kafka import KafkaError

Profile = Literal["local", "cluster", "production"]  # catalog profiles; cluster: `dev up --brokers 3`
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
# librdkafka properties, as confluent-kafka's clients take them.
KafkaConfig = dict[str, str | int | float | bool]


class Settings(BaseSettings):
    """Where the platform's parts are and how to talk to them."""

    model_config = SettingsConfigDict(env_prefix="STREAMS_", frozen=True, extra="ignore")

    kafka_bootstrap_servers: str | None = Field(
        default=None, description="Kafka bootstrap servers; unset means the running local stack."
    )
    schema_registry_url: str | None = Field(default=None, description="Schema registry base URL.")
    redis_url: str | None = Field(default=None, description="Redis URL for the Celery bridge.")
    webhook_secrets: SecretStr | None = Field(
        default=None,
        description="Webhook signing secrets by the name a route's `secret:` gives, as a JSON object "
        '(STREAMS_WEBHOOK_SECRETS=\'{"partner-a": "whsec_..."}\'); read by `webhook_secret_map`. Never shown.',
    )
    kafka_security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", description="How clients talk to the brokers (librdkafka security.protocol)."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="SASL mechanism; required with SASL_PLAINTEXT and SASL_SSL."
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = Field(default=None, description="Never logged nor shown.")
    kafka_ssl_ca_location: Path | None = Field(
        default=None, description="CA bundle (PEM) that signed the brokers' certificates; unset: system CAs."
    )
    kafka_ssl_certificate_location: Path | None = Field(default=None, description="Client certificate (mTLS).")
    kafka_ssl_key_location: Path | None = Field(default=None, description="Client private key (mTLS).")
    kafka_ssl_key_password: SecretStr | None = Field(default=None, description="Password of the client key.")
    profile: Profile = "local"
    catalog_path: Path = Path("topics.yaml")
    agent_max_record_bytes: int = Field(default=1_048_576, description="Larger records go to the DLQ.")
    data_dir: Path = Path(".streams")
    archive_url: str | None = Field(
        default=None,
        description="Where `streams archive` keeps segments: a directory or s3://bucket/prefix; "
        "unset: <data_dir>/archive. Object storage credentials come from the usual AWS_* variables.",
    )
    audit_checkpoint_key: Path | None = Field(
        default=None, description="Ed25519 private key (PEM) the audit writer signs checkpoints of the chain head with."
    )
    audit_checkpoint_file: Path | None = Field(
        default=None,
        description="Where the audit writer appends its signed checkpoints (JSON lines); unset: "
        "<data_dir>/audit.checkpoints. Copy it away from the cluster.",
    )
    audit_checkpoint_interval_s: float = Field(default=60.0, gt=0, description="Seconds between signed checkpoints.")
    archive_endpoint_url: str | None = Field(
        default=None, description="The S3 endpoint of an S3-compatible store (MinIO, S3Proxy, Ceph); unset: AWS."
    )
    kafka_connect_timeout_s: float = Field(
        default=3.0, gt=0, description="How long a command waits for the brokers to answer before it gives up."
    )
    verbose: bool = Field(default=False, description="librdkafka's own log lines on stderr (`streams --verbose`).")
    check_reachable: bool = Field(
        default=False,
        description="bootstrap_servers() first checks that a broker answers; the CLI sets it, so a command"
        " fails in one line within kafka_connect_timeout_s, while library clients keep their own retries.",
    )

    def archive_location(self) -> tuple[str, dict[str, object]]:
        """(location, fsspec options) of the archive (streams.archive.store.open_store takes both)."""
        location = self.archive_url or str(self.data_dir / "archive")
        options: dict[str, object] = {}
        if self.archive_endpoint_url:
            options["client_kwargs"] = {"endpoint_url": self.archive_endpoint_url}
        return location, options

    def kafka_config(self, bootstrap_servers: str) -> KafkaConfig:
        """librdkafka connection properties, security included: every Kafka client is built from these.

        ConfigError (naming the STREAMS_* variables, never a secret) when the security settings do not fit
        together. The dict holds the password in clear, so it is never logged; faust gets the same
        properties translated by `streams.faust_app.broker_credentials`.
        """
        protocol = self.kafka_security_protocol
        config: KafkaConfig = {"bootstrap.servers": bootstrap_servers, "security.protocol": protocol}
        if not self.verbose:
            # librdkafka writes its own retry lines (FAIL, GETPID, ...) to stderr; what matters reaches
            # the caller as an error or exception, so a terminal sees them only with `--verbose`.
            config["log_level"] = 0
        if protocol in {"SASL_PLAINTEXT", "SASL_SSL"}:
            mechanism, username, password = self._sasl_credentials()
            config.update({"sasl.mechanism": mechanism, "sasl.username": username, "sasl.password": password})
        elif self.kafka_sasl_username is not None or self.kafka_sasl_password is not None:
            raise _config_error(
                f"SASL credentials are set but STREAMS_KAFKA_SECURITY_PROTOCOL={protocol} does not use them;"
                " set it to SASL_PLAINTEXT or SASL_SSL, or unset STREAMS_KAFKA_SASL_USERNAME/_PASSWORD"
            )
        files = {key: path for key, path in self._ssl_files().items() if path is not None}
        if protocol in {"SSL", "SASL_SSL"}:
            config.update(self._checked_tls_files(files))
            if self.kafka_ssl_key_password is not None:
                config["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        elif files:
            raise _config_error(
                f"{', '.join(map(_variable, files))} set but STREAMS_KAFKA_SECURITY_PROTOCOL={protocol} does"
                " not use TLS; set it to SSL or SASL_SSL"
            )
        return config

    def check_kafka_login(self, bootstrap_servers: str, *, timeout_s: float = 10.0) -> None:
        """ConfigError when the brokers refuse these settings' SASL credentials or TLS handshake.

        One clear error before long-running clients start, instead of librdkafka retrying forever and
        faust failing somewhere later. PLAINTEXT has nothing to check; an unreachable cluster is left to
        the caller's own error after `timeout_s`.
        """
        self.kafka_config(bootstrap_servers)  # inconsistent security settings fail first
        if self.kafka_security_protocol != "PLAINTEXT":
            self._probe(bootstrap_servers, timeout_s)

    def check_kafka_reachable(self, bootstrap_servers: str, *, origin: str, fix: str) -> None:
        """ConfigError, one line naming the address, where it came from (`origin`) and the `fix`, when no broker
        answers within `kafka_connect_timeout_s` (or refuses the login). Once per process and address."""
        key = (bootstrap_servers, self.kafka_security_protocol, self.kafka_sasl_username)
        if key in _REACHED:
            return
        failure = self._probe(bootstrap_servers, self.kafka_connect_timeout_s)
        if failure is not None:
            raise _config_error(
                f"cannot reach Kafka at {bootstrap_servers} ({origin}): {failure}"
                f" (no answer within {self.kafka_connect_timeout_s:g} s); {fix}"
            )
        _REACHED.add(key)

    def _probe(self, bootstrap_servers: str, timeout_s: float) -> str | None:
        """None once a broker answers metadata; else why not (the last transport error librdkafka reported).

        A refused login or TLS handshake raises at once: retrying cannot fix it.
        """
        from confluent_kafka import KafkaError, KafkaException, Producer  # noqa: PLC0415 - import-light

        errors: list[KafkaError] = []
        # kafka_config sets log_level 0 unless verbose: the failure is reported once, by the caller.
        probe = Producer({**self.kafka_config(bootstrap_servers), "error_cb": errors.append})
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                probe.list_topics(timeout=min(0.5, remaining))
            except KafkaException:
                probe.poll(0)  # serves error_cb
            else:
                return None
            for error in errors:
                tls = error.code() == KafkaError._SSL or (
                    error.code() == KafkaError._TRANSPORT and self._tls_refused(error.str())
                )
                if tls or error.code() == KafkaError._AUTHENTICATION:
                    raise _config_error(self._refusal(bootstrap_servers, error, tls=tls))
        transport = [error for error in errors if error.code() != KafkaError._ALL_BROKERS_DOWN]
        return _reason(transport[-1]) if transport else "no broker answered"

    def _refusal(self, bootstrap_servers: str, error: KafkaError, *, tls: bool) -> str:
        # librdkafka's text ("<broker>: SASL authentication error: <reason>") never holds the password.
        reason = _reason(error)
        if not tls:
            return (
                f"SASL authentication failed: the brokers at {bootstrap_servers} refused user"
                f" '{self.kafka_sasl_username}' with {self.kafka_sasl_mechanism} ({reason}); check"
                " STREAMS_KAFKA_SASL_USERNAME and STREAMS_KAFKA_SASL_PASSWORD"
            )
        from streams.tls_check import explain  # noqa: PLC0415 - only when a handshake failed

        files = {key: str(path) for key, path in self._ssl_files().items() if path is not None}
        return (
            f"TLS with the brokers at {bootstrap_servers} failed for {self._principal()}:"
            f" {explain(bootstrap_servers, error.str(), files)}"
        )

    def _tls_refused(self, text: str) -> bool:
        """A transport error that is the broker refusing our TLS (a client certificate under mTLS)."""
        if self.kafka_security_protocol not in {"SSL", "SASL_SSL"}:
            return False
        from streams.tls_check import is_tls_failure  # noqa: PLC0415

        return is_tls_failure(text)

    def _principal(self) -> str:
        """Who this client is to the brokers, as their ACLs name it: the SASL user, else the client certificate's
        subject (what SSL-only listeners take), else ANONYMOUS. Never a secret."""
        if self.kafka_sasl_username:
            return f"User:{self.kafka_sasl_username}"
        if self.kafka_ssl_certificate_location is not None:
            return f"the client certificate in {self.kafka_ssl_certificate_location}"
        return "User:ANONYMOUS"

    def _sasl_credentials(self) -> tuple[str, str, str]:
        mechanism, username, password = self.kafka_sasl_mechanism, self.kafka_sasl_username, self.kafka_sasl_password
        if not mechanism or not username or password is None or not password.get_secret_value():
            missing = [
                f"STREAMS_KAFKA_SASL_{name}"
                for name, value in (("MECHANISM", mechanism), ("USERNAME", username), ("PASSWORD", password))
                if not value
            ]
            raise _config_error(
                f"STREAMS_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs {', '.join(missing)}"
                f" (the mechanism one of {', '.join(get_args(SaslMechanism))})"
            )
        return mechanism, username, password.get_secret_value()

    def _ssl_files(self) -> dict[str, Path | None]:
        """librdkafka's TLS file properties; each one's variable is STREAMS_KAFKA_ + its key in upper snake case."""
        return {
            "ssl.ca.location": self.kafka_ssl_ca_location,
            "ssl.certificate.location": self.kafka_ssl_certificate_location,
            "ssl.key.location": self.kafka_ssl_key_location,
        }

    @staticmethod
    def _checked_tls_files(files: dict[str, Path]) -> dict[str, str]:
        if ("ssl.certificate.location" in files) != ("ssl.key.location" in files):
            raise _config_error(
                "a client certificate needs both STREAMS_KAFKA_SSL_CERTIFICATE_LOCATION and"
                " STREAMS_KAFKA_SSL_KEY_LOCATION"
            )
        for key, path in files.items():
            if not path.is_file():
                raise _config_error(f"{_variable(key)}={path}: no such file (a PEM file this process can read)")
        return {key: str(path) for key, path in files.items()}

    def webhook_secret_map(self) -> dict[str, SecretStr]:
        """STREAMS_WEBHOOK_SECRETS as name -> secret; ConfigError (never quoting it) when it is not a JSON object
        of strings. Parsed here rather than by pydantic, so a malformed value fails the webhook commands with one
        line instead of every command with a traceback."""
        if self.webhook_secrets is None:
            return {}
        try:
            parsed = json.loads(self.webhook_secrets.get_secret_value())
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
            raise _config_error(
                "STREAMS_WEBHOOK_SECRETS must be a JSON object of secret names to secrets, like "
                '{"partner-a": "whsec_..."}'
            )
        return {str(name): SecretStr(value) for name, value in parsed.items()}

    def bootstrap_servers(self, *, check: bool | None = None) -> str:
        """The explicit bootstrap servers, else the running local stack's broker.

        With `check` (default: `check_reachable`, which the CLI sets), a ConfigError in one line, within
        `kafka_connect_timeout_s`, when no broker there answers: every command learns it here, before its
        clients retry for minutes.
        """
        if self.kafka_bootstrap_servers:
            address = self.kafka_bootstrap_servers
            origin = "STREAMS_KAFKA_BOOTSTRAP_SERVERS"
            fix = (
                "check that variable (host:port of a broker, comma-separated), or unset it to use the local"
                " stack (`streams dev up`)"
            )
        else:
            address = self._local_address("kafka", "STREAMS_KAFKA_BOOTSTRAP_SERVERS")
            origin = f"the local stack's, from {self._state_file()}"
            fix = "restart it with `streams dev down && streams dev up`, or set STREAMS_KAFKA_BOOTSTRAP_SERVERS"
        if self.check_reachable if check is None else check:
            self.check_kafka_reachable(address, origin=origin, fix=fix)
        return address

    def registry_url(self) -> str:
        """The explicit schema registry URL, else the running local stack's registry."""
        if self.schema_registry_url:
            return self.schema_registry_url
        return self._local_address("registry", "STREAMS_SCHEMA_REGISTRY_URL")

    def redis(self) -> str:
        """The explicit Redis URL, else the running local stack's redis-server."""
        if self.redis_url:
            return self.redis_url
        return self._local_address("redis", "STREAMS_REDIS_URL")

    def _local_address(self, service: str, variable: str) -> str:
        from streams.errors import ConfigError  # noqa: PLC0415 - keeps settings import-light
        from streams.local.state import read_state  # noqa: PLC0415

        state = read_state(self.data_dir)
        address = state.address(service) if state else None
        if address is None:
            raise ConfigError(
                f"no {service} address: set {variable}, or start the local stack with `streams dev up`"
                f" (looked for a running {service} in {self.data_dir / 'local'})"
            )
        return address

    def _state_file(self) -> Path:
        from streams.local.state import state_path  # noqa: PLC0415 - keeps settings import-light

        return state_path(self.data_dir)

    @field_validator("catalog_path", "data_dir")
    @classmethod
    def _in_project(cls, path: Path, info: ValidationInfo) -> Path:
        """A relative path missing here but present in a parent directory is that one, so every command
        works from any subdirectory of the project (as git does); the data dir goes beside the catalog."""
        if path.is_absolute() or path.exists():
            return path
        try:
            parents = Path.cwd().parents
        except OSError:  # the working directory was deleted: nothing to search
            return path
        for parent in parents:
            if (parent / path).exists():
                return parent / path
        catalog = info.data.get("catalog_path") if info.field_name == "data_dir" else None
        if isinstance(catalog, Path) and catalog.is_absolute() and catalog.exists():
            return catalog.parent / path
        return path


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (`overrides` win), or a ConfigError in one line naming the variable,
    the value and what is allowed, instead of pydantic's multi-line report."""
    from pydantic import ValidationError  # noqa: PLC0415 - only on this path

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            variable = f"STREAMS_{field.upper()}"
            problems.append(f"{variable}={error['input']!r} is not valid: {error['msg']}")
        raise _config_error("; ".join(problems) + " (fix or unset the variable)") from None


_REACHED: set[tuple[str, str, str | None]] = set()  # the brokers that answered this process once


def _reason(error: KafkaError) -> str:
    """librdkafka's own reason, without the broker prefix and state suffix: 'Connection refused'."""
    text = error.str().rsplit(": ", 1)[-1]
    return re.sub(r"\s*\(after \d+ms in state \w+(, \d+ identical error\(s\) suppressed)?\)$", "", text)


def _variable(librdkafka_key: str) -> str:
    return "STREAMS_KAFKA_" + librdkafka_key.replace(".", "_").upper()


def _config_error(message: str) -> Exception:
    from streams.errors import ConfigError  # noqa: PLC0415 - keeps settings import-light

    return ConfigError(message)
