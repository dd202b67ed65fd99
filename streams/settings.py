"""Runtime settings: one frozen object read from the environment (prefix STREAMS_).

Nothing here is read at import; call `Settings()` (or `load_settings`) where it is needed.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from confluent_kafka import KafkaError

Profile = Literal["local", "production"]
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

    def kafka_config(self, bootstrap_servers: str) -> KafkaConfig:
        """librdkafka connection properties, security included: every Kafka client is built from these.

        ConfigError (naming the STREAMS_* variables, never a secret) when the security settings do not fit
        together. The dict holds the password in clear, so it is never logged; faust gets the same
        properties translated by `streams.faust_app.broker_credentials`.
        """
        protocol = self.kafka_security_protocol
        config: KafkaConfig = {"bootstrap.servers": bootstrap_servers, "security.protocol": protocol}
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
        config = self.kafka_config(bootstrap_servers)
        if self.kafka_security_protocol == "PLAINTEXT":
            return
        from confluent_kafka import KafkaError, KafkaException, Producer  # noqa: PLC0415 - import-light

        refusals: list[KafkaError] = []
        # log_level 0: the refusal is reported once, below, not as librdkafka's retry lines on stderr.
        probe = Producer({**config, "error_cb": refusals.append, "log_level": 0})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                probe.list_topics(timeout=0.5)
            except KafkaException:
                probe.poll(0)  # serves error_cb
            else:
                return
            for error in refusals:
                if error.code() in {KafkaError._AUTHENTICATION, KafkaError._SSL}:
                    raise _config_error(self._refusal(bootstrap_servers, error, tls=error.code() == KafkaError._SSL))

    def _refusal(self, bootstrap_servers: str, error: KafkaError, *, tls: bool) -> str:
        # librdkafka's text ("<broker>: SASL authentication error: <reason>") never holds the password.
        reason = re.sub(r"\s*\(after \d+ms in state \w+\)$", "", error.str().rsplit(": ", 1)[-1])
        if not tls:
            return (
                f"SASL authentication failed: the brokers at {bootstrap_servers} refused user"
                f" '{self.kafka_sasl_username}' with {self.kafka_sasl_mechanism} ({reason}); check"
                " STREAMS_KAFKA_SASL_USERNAME and STREAMS_KAFKA_SASL_PASSWORD"
            )
        return (
            f"TLS handshake with the brokers at {bootstrap_servers} failed ({reason}); check"
            " STREAMS_KAFKA_SSL_CA_LOCATION (the CA that signed the brokers' certificates)"
        )

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

    def bootstrap_servers(self) -> str:
        """The explicit bootstrap servers, else the running local stack's broker."""
        if self.kafka_bootstrap_servers:
            return self.kafka_bootstrap_servers
        return self._local_address("kafka", "STREAMS_KAFKA_BOOTSTRAP_SERVERS")

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



def _variable(librdkafka_key: str) -> str:
    return "STREAMS_KAFKA_" + librdkafka_key.replace(".", "_").upper()


def _config_error(message: str) -> Exception:
    from streams.errors import ConfigError  # noqa: PLC0415 - keeps settings import-light

    return ConfigError(message)
