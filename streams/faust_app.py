"""For faust-streaming apps (the benchmark peer, and existing faust apps that read our topics): the broker
credentials translated for aiokafka, and a faust codec for our Confluent wire format. The runtime never
imports this module.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

import faust
from faust.serializers.codecs import Codec

from streams.records import EventDecoder

if TYPE_CHECKING:
    from streams.settings import KafkaConfig


def broker_credentials(kafka_config: KafkaConfig) -> faust.types.auth.CredentialsT | None:
    """faust's (aiokafka's) credentials for the librdkafka properties `Settings.kafka_config` made.

    The one translation: faust connects with exactly the security the confluent-kafka clients use.
    """
    protocol = str(kafka_config.get("security.protocol", "PLAINTEXT"))
    context = None
    if protocol in {"SSL", "SASL_SSL"}:
        ca = kafka_config.get("ssl.ca.location")
        context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
        certificate = kafka_config.get("ssl.certificate.location")
        if certificate is not None:
            key_password = kafka_config.get("ssl.key.password")
            context.load_cert_chain(
                str(certificate),
                str(kafka_config["ssl.key.location"]),
                str(key_password) if key_password is not None else None,
            )
    if protocol in {"SASL_PLAINTEXT", "SASL_SSL"}:
        return faust.SASLCredentials(
            username=str(kafka_config["sasl.username"]),
            password=str(kafka_config["sasl.password"]),
            mechanism=str(kafka_config["sasl.mechanism"]),
            ssl_context=context,
        )
    return faust.SSLCredentials(context) if context is not None else None


class StreamsAvroCodec(Codec):
    """Decodes our topics' values (magic byte, schema id, Avro) into dicts, with schemas from our registry.

    Example:
        faust.serializers.codecs.register("streams-avro", StreamsAvroCodec(EventDecoder(RegistryClient(url))))
        topic = app.topic("invoice.cleared", value_serializer="streams-avro")
    """

    def __init__(self, decoder: EventDecoder, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.decoder = decoder

    def _loads(self, value: bytes) -> Any:
        return self.decoder.decode(value)[1]

    def _dumps(self, value: Any) -> bytes:
        raise NotImplementedError("write with streams.Publisher (schema-checked, keyed, CloudEvents headers)")
