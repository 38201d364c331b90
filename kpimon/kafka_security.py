"""Kafka security settings (`[kafka]` security_protocol, SASL, TLS) as client options.

One place turns `KafkaConfig` into what the clients take, so every client connects the
same way:

- `aiokafka_options(kafka)`: keyword arguments for `AIOKafkaProducer`, `AIOKafkaConsumer`
  and `AIOKafkaAdminClient` (``**aiokafka_options(settings.kafka)``);
- `faust_broker_credentials(kafka)`: the value for ``faust.App(broker_credentials=...)``.

Faust derives the security protocol from its credentials object: `SASLCredentials`
without an SSL context is SASL_PLAINTEXT, with one SASL_SSL; `SSLCredentials` is SSL;
no credentials (and no `ssl_context` setting) is PLAINTEXT
(`faust.transport.drivers.aiokafka.credentials_to_aiokafka_auth`).
"""

from __future__ import annotations

import ssl
from typing import Any

from kpimon.config import SASL_PROTOCOLS, SSL_PROTOCOLS, ConfigError, KafkaConfig


def ssl_context(kafka: KafkaConfig) -> ssl.SSLContext | None:
    """The client TLS context for SSL and SASL_SSL (None otherwise).

    Verifies the broker's certificate and host name against `ssl_cafile` (default: the
    system CAs) and presents `ssl_certfile`/`ssl_keyfile` when given. Unreadable PEM
    files raise ConfigError.
    """
    if kafka.security_protocol not in SSL_PROTOCOLS:
        return None
    from aiokafka.helpers import create_ssl_context

    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=kafka.ssl_cafile, certfile=kafka.ssl_certfile, keyfile=kafka.ssl_keyfile
        )
    except (ssl.SSLError, OSError) as exc:
        files = ", ".join(
            f"{name}={path}"
            for name, path in (("ssl_cafile", kafka.ssl_cafile),
                               ("ssl_certfile", kafka.ssl_certfile),
                               ("ssl_keyfile", kafka.ssl_keyfile))
            if path
        )
        raise ConfigError(
            f"kafka: cannot build the TLS context from {files or 'the system CAs'}: {exc}"
        ) from None
    return context


def aiokafka_options(kafka: KafkaConfig) -> dict[str, Any]:
    """Keyword arguments for aiokafka's producer, consumer and admin client."""
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.security_protocol in SASL_PROTOCOLS:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password
    context = ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    return options


def faust_broker_credentials(kafka: KafkaConfig) -> Any | None:
    """`broker_credentials=` for `faust.App`: SASLCredentials, SSLCredentials or None."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    import faust  # late: the simulator and `kpimon tail` never load Faust

    context = ssl_context(kafka)
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    # ssl_context=None is what makes Faust choose SASL_PLAINTEXT, a context SASL_SSL.
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password,
        mechanism=kafka.sasl_mechanism,
        ssl_context=context,
    )
