"""Runtime settings: one frozen object read from the environment (prefix STREAMS_).

Nothing here is read at import; call `Settings()` (or `load_settings`) where it is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["local", "production"]
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
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    profile: Profile = "local"
    catalog_path: Path = Path("topics.yaml")
    agent_max_record_bytes: int = Field(default=1_048_576, description="Larger records go to the DLQ.")
    data_dir: Path = Path(".streams")

    def kafka_config(self, bootstrap_servers: str) -> KafkaConfig:
        """librdkafka connection properties (security included, never logged)."""
        config: KafkaConfig = {
            "bootstrap.servers": bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username is not None:
            config["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password is not None:
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        return config

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
