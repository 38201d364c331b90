"""Kafka security settings: validation, client options, Faust credentials, redaction."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kpimon import sim, tail
from kpimon.cli import main
from kpimon.config import ConfigError, KafkaConfig, load_settings
from kpimon.kafka_security import aiokafka_options, faust_broker_credentials, ssl_context
from kpimon.sim.config import SimRecord

PASSWORD = "pa55-w0rd:with colon"  # a test value that must never be printed
SASL_ENV = {
    "KPIMON_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "KPIMON_KAFKA__SASL_USERNAME": "kpimon",
    "KPIMON_KAFKA__SASL_PASSWORD": PASSWORD,
}


@pytest.fixture(autouse=True)
def _no_kpimon_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("KPIMON_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A self-signed certificate (also usable as CA file) and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("pem")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=kpimon"],
        check=True, capture_output=True, timeout=60,
    )
    junk = folder / "junk.pem"
    junk.write_text("not a certificate\n")
    return {"cert": str(cert), "key": str(key), "junk": str(junk)}


def kafka(environ: dict[str, str]) -> KafkaConfig:
    return load_settings(None, environ).kafka


def problems(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ)
    text = str(info.value)
    assert PASSWORD not in text
    return text


# --- configuration ----------------------------------------------------------------------


def test_defaults_are_plaintext() -> None:
    k = KafkaConfig()
    assert (k.security_protocol, k.sasl_mechanism) == ("PLAINTEXT", "PLAIN")
    assert k.sasl_username is k.sasl_password is None
    assert k.ssl_cafile is k.ssl_certfile is k.ssl_keyfile is None


def test_settings_come_from_the_generic_environment_names() -> None:
    k = kafka({**SASL_ENV, "KPIMON_KAFKA__SASL_MECHANISM": "scram-sha-512"})
    assert (k.security_protocol, k.sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert (k.sasl_username, k.sasl_password) == ("kpimon", PASSWORD)


def test_settings_come_from_the_file(tmp_path: Path, pem: dict[str, str]) -> None:
    path = tmp_path / "kpimon.toml"
    path.write_text(
        f'[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-256"\n'
        f'sasl_username = "u"\nssl_cafile = "{pem["cert"]}"\n'
    )
    k = load_settings(path, {"KPIMON_KAFKA__SASL_PASSWORD": PASSWORD}).kafka
    assert (k.security_protocol, k.sasl_mechanism, k.ssl_cafile) == (
        "SASL_SSL", "SCRAM-SHA-256", pem["cert"],
    )


def test_the_password_is_not_in_repr() -> None:
    k = kafka(SASL_ENV)
    assert PASSWORD not in repr(k) and PASSWORD not in str(k)
    assert PASSWORD not in repr(load_settings(None, SASL_ENV))


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("drop", ["KPIMON_KAFKA__SASL_USERNAME", "KPIMON_KAFKA__SASL_PASSWORD"])
def test_sasl_needs_username_and_password(protocol: str, drop: str) -> None:
    env = {**SASL_ENV, "KPIMON_KAFKA__SECURITY_PROTOCOL": protocol}
    del env[drop]
    assert f"{protocol} needs sasl_username and sasl_password" in problems(env)


def test_credentials_without_a_sasl_protocol_are_refused() -> None:
    env = {**SASL_ENV, "KPIMON_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT"}
    assert "security_protocol is PLAINTEXT" in problems(env)
    del env["KPIMON_KAFKA__SECURITY_PROTOCOL"]  # the default
    assert "use SASL_PLAINTEXT or SASL_SSL" in problems(env)


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("SECURITY_PROTOCOL", "TLS", "kafka.security_protocol"),
        ("SASL_MECHANISM", "GSSAPI", "kafka.sasl_mechanism"),
        ("SSL_CAFILE", "/nonexistent/ca.pem", "no such file: /nonexistent/ca.pem"),
        ("SSL_CERTFILE", "/nonexistent/cert.pem", "kafka.ssl_certfile"),
        ("SSL_KEYFILE", "/nonexistent/key.pem", "kafka.ssl_keyfile"),
    ],
)
def test_bad_values_are_reported(name: str, value: str, words: str) -> None:
    env = {"KPIMON_KAFKA__SECURITY_PROTOCOL": "SSL", f"KPIMON_KAFKA__{name}": value}
    assert words in problems(env)


def test_ssl_files_need_an_ssl_protocol(pem: dict[str, str]) -> None:
    env = {"KPIMON_KAFKA__SSL_CAFILE": pem["cert"]}
    assert "use SSL or SASL_SSL" in problems(env)
    env["KPIMON_KAFKA__SECURITY_PROTOCOL"] = "SASL_PLAINTEXT"
    text = problems({**SASL_ENV, **env})
    assert "use SSL or SASL_SSL" in text


def test_a_key_needs_its_certificate(pem: dict[str, str]) -> None:
    env = {"KPIMON_KAFKA__SECURITY_PROTOCOL": "SSL", "KPIMON_KAFKA__SSL_KEYFILE": pem["key"]}
    assert "ssl_keyfile needs ssl_certfile" in problems(env)


# --- aiokafka options -------------------------------------------------------------------


def test_plaintext_options() -> None:
    assert aiokafka_options(KafkaConfig()) == {"security_protocol": "PLAINTEXT"}
    assert ssl_context(KafkaConfig()) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_options(mechanism: str) -> None:
    k = kafka({**SASL_ENV, "KPIMON_KAFKA__SASL_MECHANISM": mechanism})
    assert aiokafka_options(k) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "kpimon",
        "sasl_plain_password": PASSWORD,
    }


def test_ssl_options_verify_the_broker(pem: dict[str, str]) -> None:
    k = kafka({"KPIMON_KAFKA__SECURITY_PROTOCOL": "SSL", "KPIMON_KAFKA__SSL_CAFILE": pem["cert"],
               "KPIMON_KAFKA__SSL_CERTFILE": pem["cert"], "KPIMON_KAFKA__SSL_KEYFILE": pem["key"]})
    options = aiokafka_options(k)
    assert set(options) == {"security_protocol", "ssl_context"}
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "kpimon"),),)]


def test_ssl_without_a_ca_file_uses_the_system_cas() -> None:
    context = ssl_context(KafkaConfig(security_protocol="SSL"))
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED


def test_sasl_ssl_options(pem: dict[str, str]) -> None:
    k = kafka({**SASL_ENV, "KPIMON_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
               "KPIMON_KAFKA__SSL_CAFILE": pem["cert"]})
    options = aiokafka_options(k)
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("kpimon", PASSWORD)
    assert isinstance(options["ssl_context"], ssl.SSLContext)


@pytest.mark.parametrize(
    "files", [{"SSL_CAFILE": "junk"}, {"SSL_CERTFILE": "junk"}, {"SSL_CERTFILE": "cert"}]
)
def test_unusable_pem_files_are_a_config_error(pem: dict[str, str], files: dict[str, str]) -> None:
    # The last case: a certificate without its key (neither in the file nor as keyfile).
    env = {"KPIMON_KAFKA__SECURITY_PROTOCOL": "SSL"}
    env.update({f"KPIMON_KAFKA__{name}": pem[which] for name, which in files.items()})
    with pytest.raises(ConfigError, match="cannot build the TLS context"):
        aiokafka_options(kafka(env))


def test_options_are_accepted_by_every_aiokafka_client(pem: dict[str, str]) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    k = kafka({**SASL_ENV, "KPIMON_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
               "KPIMON_KAFKA__SSL_CAFILE": pem["cert"]})

    async def build() -> None:  # constructing connects nowhere
        options = aiokafka_options(k)
        AIOKafkaProducer(bootstrap_servers="b:9092", **options)
        AIOKafkaConsumer("t", bootstrap_servers="b:9092", **options)
        AIOKafkaAdminClient(bootstrap_servers="b:9092", **options)

    asyncio.run(build())


# --- Faust credentials ------------------------------------------------------------------


def faust_auth(credentials: Any) -> dict[str, Any]:
    """What Faust's aiokafka driver hands its producer and consumers for `credentials`."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    return dict(credentials_to_aiokafka_auth(credentials, None))


def test_plaintext_has_no_faust_credentials() -> None:
    assert faust_broker_credentials(KafkaConfig()) is None
    assert faust_auth(None) == aiokafka_options(KafkaConfig())


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_credentials_make_faust_connect_like_the_other_clients(
    mechanism: str,
) -> None:
    import faust

    k = kafka({**SASL_ENV, "KPIMON_KAFKA__SASL_MECHANISM": mechanism})
    credentials = faust_broker_credentials(k)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.ssl_context is None  # this is what makes Faust use SASL_PLAINTEXT
    assert PASSWORD not in repr(credentials)
    assert faust_auth(credentials) == {**aiokafka_options(k), "ssl_context": None}


def test_sasl_ssl_credentials(pem: dict[str, str]) -> None:
    import faust

    k = kafka({**SASL_ENV, "KPIMON_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
               "KPIMON_KAFKA__SSL_CAFILE": pem["cert"]})
    credentials = faust_broker_credentials(k)
    assert isinstance(credentials, faust.SASLCredentials)
    auth = faust_auth(credentials)
    assert isinstance(auth.pop("ssl_context"), ssl.SSLContext)
    expected = aiokafka_options(k)
    del expected["ssl_context"]
    assert auth == expected


def test_ssl_credentials(pem: dict[str, str]) -> None:
    import faust

    k = kafka({"KPIMON_KAFKA__SECURITY_PROTOCOL": "SSL", "KPIMON_KAFKA__SSL_CAFILE": pem["cert"]})
    credentials = faust_broker_credentials(k)
    assert isinstance(credentials, faust.SSLCredentials)
    auth = faust_auth(credentials)
    assert auth["security_protocol"] == "SSL"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)


# --- check-config never prints the password ---------------------------------------------


def test_check_config_redacts_the_sasl_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in SASL_ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["check-config"]) == 0
    out, err = capsys.readouterr()
    assert PASSWORD not in out and PASSWORD not in err
    shown = json.loads(out)["kafka"]
    assert shown["sasl_password"] == "<set>"
    assert (shown["security_protocol"], shown["sasl_username"]) == ("SASL_PLAINTEXT", "kpimon")


def test_check_config_errors_never_show_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KPIMON_KAFKA__SASL_PASSWORD", PASSWORD)  # without SASL protocol
    assert main(["check-config"]) == 2
    out, err = capsys.readouterr()
    assert "kafka" in err and PASSWORD not in out + err


# --- the simulator and `kpimon tail` use the settings -----------------------------------


class FakeProducer:
    instances: list[FakeProducer] = []

    def __init__(self, **config: Any) -> None:
        self.config = config
        FakeProducer.instances.append(self)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


@pytest.fixture
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    import aiokafka

    FakeProducer.instances = []
    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", FakeProducer)
    return FakeProducer


def test_produce_passes_client_options(fake_producer: type[FakeProducer]) -> None:
    records = [SimRecord("support.tickets", b"k", b"{}", "valid", 0.0)]
    options = aiokafka_options(kafka(SASL_ENV))
    sent = asyncio.run(sim.produce(records, "b:1", realtime=False, progress=False,
                                   client_options=options))
    assert sent == 1
    config = fake_producer.instances[0].config
    assert config["bootstrap_servers"] == "b:1" and config["acks"] == "all"
    assert {k: config[k] for k in options} == options


SIM_ARGS = ["--seed", "1", "--start", "2025-11-22T08:00:00Z", "--duration", "60", "--quiet"]


def test_simulate_takes_security_and_bootstrap_from_the_configuration(
    fake_producer: type[FakeProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**SASL_ENV, "KPIMON_BOOTSTRAP": "from-env:9094"}.items():
        monkeypatch.setenv(name, value)
    assert sim.main(SIM_ARGS) == 0
    assert sim.main([*SIM_ARGS, "--bootstrap", "from-option:9094"]) == 0
    first, second = (p.config for p in fake_producer.instances)
    assert first["bootstrap_servers"] == "from-env:9094"
    assert second["bootstrap_servers"] == "from-option:9094"
    for config in (first, second):
        assert config["security_protocol"] == "SASL_PLAINTEXT"
        assert (config["sasl_plain_username"], config["sasl_plain_password"]) == (
            "kpimon", PASSWORD,
        )


def test_simulate_reads_the_config_file(
    fake_producer: type[FakeProducer], tmp_path: Path
) -> None:
    path = tmp_path / "kpimon.toml"
    path.write_text('[kafka]\nbootstrap = "file:9092"\nsecurity_protocol = "SASL_PLAINTEXT"\n'
                    f'sasl_username = "u"\nsasl_password = "{PASSWORD}"\n')
    assert sim.main([*SIM_ARGS, "--config", str(path)]) == 0
    config = fake_producer.instances[0].config
    assert config["bootstrap_servers"] == "file:9092"
    assert config["sasl_plain_password"] == PASSWORD


def test_simulate_with_a_bad_configuration_exits_2(
    fake_producer: type[FakeProducer], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KPIMON_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    assert sim.main(SIM_ARGS) == 2
    assert "needs sasl_username and sasl_password" in capsys.readouterr().err
    assert not fake_producer.instances


def test_simulate_to_a_file_needs_no_kafka_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KPIMON_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")  # incomplete, unused
    assert sim.main([*SIM_ARGS, "--out", str(tmp_path / "out.jsonl")]) == 0


class FakeConsumer:
    instances: list[FakeConsumer] = []

    def __init__(self, *topics: str, **config: Any) -> None:
        self.topics, self.config = topics, config
        FakeConsumer.instances.append(self)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def __aiter__(self) -> FakeConsumer:
        return self

    async def __anext__(self) -> Any:
        raise StopAsyncIteration


def test_tail_takes_security_topic_and_bootstrap_from_the_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    FakeConsumer.instances = []
    monkeypatch.setattr(tail, "AIOKafkaConsumer", FakeConsumer)
    env = {**SASL_ENV, "KPIMON_BOOTSTRAP": "env:9094", "KPIMON_TOPIC_KPIS": "cc.kpis"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    tail.add_arguments(parser)
    assert tail.run(parser.parse_args([])) == 0
    assert tail.run(parser.parse_args(["--bootstrap", "opt:1", "--topic", "t"])) == 0
    first, second = FakeConsumer.instances
    assert (first.topics, first.config["bootstrap_servers"]) == (("cc.kpis",), "env:9094")
    assert (second.topics, second.config["bootstrap_servers"]) == (("t",), "opt:1")
    for consumer in (first, second):
        assert consumer.config["security_protocol"] == "SASL_PLAINTEXT"
        assert consumer.config["sasl_plain_password"] == PASSWORD
    assert PASSWORD not in capsys.readouterr().err


def test_tail_with_a_bad_configuration_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KPIMON_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    assert main(["tail"]) == 2
    assert "needs sasl_username" in capsys.readouterr().err
