"""kpimon.config: SPEC defaults < TOML file < environment, and `kpimon check-config`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpimon.cli import main
from kpimon.config import ConfigError, Settings, load_settings
from streams.rules import KpiRules, default_sla_targets

REPO = Path(__file__).resolve().parents[2]
DAY = 86400.0

# SPEC section 3, first-response targets in seconds: channel -> (urgent, high, normal, low).
SPEC_SLA_ROWS = {
    "phone": (20, 20, 20, 20),
    "chat": (60, 60, 60, 60),
    "messaging": (300, 600, 900, 1800),
    "email": (3600, 14400, 28800, 86400),
    "web": (3600, 14400, 28800, 86400),
    "social": (3600, 14400, 28800, 86400),
}
SPEC_SLA = {
    (channel, priority): float(seconds)
    for channel, row in SPEC_SLA_ROWS.items()
    for priority, seconds in zip(("urgent", "high", "normal", "low"), row, strict=True)
}


@pytest.fixture(autouse=True)
def _no_kpimon_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Tests pass `environ` explicitly; the CLI tests read os.environ, so keep it clean.
    for name in list(os.environ):
        if name.startswith("KPIMON_"):
            monkeypatch.delenv(name)
    yield


def write(tmp_path: Path, text: str, name: str = "kpimon.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path | None = None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ if environ is not None else {})
    return str(info.value)


# --- defaults -------------------------------------------------------------------------


def test_defaults_are_the_spec() -> None:
    settings = load_settings(None, {})
    rules = settings.rules
    assert rules.allowed_lateness == 120
    assert rules.orphan_timeout == 600
    assert rules.max_clock_skew == 300
    assert rules.ticket_retention == 14 * DAY
    assert rules.fcr_window == 7 * DAY
    assert rules.at_risk_fraction == 0.25
    assert settings.topics.model_dump() == {
        "tickets": "support.tickets",
        "surveys": "support.surveys",
        "kpis": "support.kpis",
        "deadletter": "support.deadletter",
    }
    assert settings.sla_targets == {}
    assert settings == Settings()


def test_default_kpi_rules_carry_the_full_sla_matrix() -> None:
    kpi = load_settings(None, {}).kpi_rules()
    assert isinstance(kpi, KpiRules)
    assert dict(kpi.sla_targets) == default_sla_targets() == SPEC_SLA
    assert (kpi.allowed_lateness, kpi.orphan_timeout, kpi.ticket_retention) == (
        120, 600, 14 * DAY,
    )
    assert (kpi.fcr_window, kpi.at_risk_fraction) == (7 * DAY, 0.25)
    assert kpi == KpiRules()


def test_the_example_file_documents_the_defaults() -> None:
    example = REPO / "deploy" / "kpimon.example.toml"
    assert load_settings(example, {}) == Settings()


# --- file and environment ---------------------------------------------------------------


def test_toml_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, """
[kafka]
bootstrap = "kafka-1:9092,kafka-2:9092"
partitions = 12
[topics]
tickets = "cc.tickets-v2"
[rules]
orphan_timeout = 900
at_risk_fraction = 0.5
fcr_window = 259200
[http]
port = 9100
""")
    settings = load_settings(path, {})
    assert settings.kafka.bootstrap == "kafka-1:9092,kafka-2:9092"
    assert settings.kafka.partitions == 12
    assert settings.topics.tickets == "cc.tickets-v2"
    assert settings.topics.surveys == "support.surveys"  # untouched
    assert (settings.rules.orphan_timeout, settings.rules.at_risk_fraction) == (900, 0.5)
    assert settings.rules.allowed_lateness == 120  # untouched
    assert settings.http.port == 9100
    kpi = settings.kpi_rules()
    assert (kpi.orphan_timeout, kpi.at_risk_fraction, kpi.fcr_window) == (900, 0.5, 3 * DAY)


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[rules]\nmax_clock_skew = 60\n")
    assert load_settings(None, {"KPIMON_CONFIG": str(path)}).rules.max_clock_skew == 60
    # An explicit path wins over KPIMON_CONFIG.
    other = write(tmp_path, "[rules]\nmax_clock_skew = 30\n", name="other.toml")
    settings = load_settings(other, {"KPIMON_CONFIG": str(path)})
    assert settings.rules.max_clock_skew == 30


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[rules]\norphan_timeout = 900\nallowed_lateness = 60\n"
                           "[kafka]\nbootstrap = \"from-file:9092\"\npartitions = 2\n")
    settings = load_settings(path, {
        "KPIMON_RULES__ORPHAN_TIMEOUT": "1200",
        "KPIMON_BOOTSTRAP": "from-env:9092",
        "KPIMON_PARTITIONS": "8",
    })
    assert settings.rules.orphan_timeout == 1200
    assert settings.rules.allowed_lateness == 60  # from the file
    assert settings.kafka.bootstrap == "from-env:9092"
    assert settings.kafka.partitions == 8
    assert settings.kpi_rules().orphan_timeout == 1200


@pytest.mark.parametrize(
    ("name", "value", "section", "key", "expected"),
    [
        ("KPIMON_BOOTSTRAP", "b:1", "kafka", "bootstrap", "b:1"),
        ("KPIMON_PARTITIONS", "16", "kafka", "partitions", 16),
        ("KPIMON_TOPIC_TICKETS", "t.x", "topics", "tickets", "t.x"),
        ("KPIMON_TOPIC_SURVEYS", "s.x", "topics", "surveys", "s.x"),
        ("KPIMON_TOPIC_KPIS", "k.x", "topics", "kpis", "k.x"),
        ("KPIMON_TOPIC_DEADLETTER", "d.x", "topics", "deadletter", "d.x"),
        ("KPIMON_HTTP_HOST", "0.0.0.0", "http", "host", "0.0.0.0"),
        ("KPIMON_HTTP_PORT", "9999", "http", "port", 9999),
        ("KPIMON_RULES__ALLOWED_LATENESS", "30.5", "rules", "allowed_lateness", 30.5),
        ("KPIMON_RULES__WATERMARK_IDLE_SECONDS", "0", "rules", "watermark_idle_seconds", 0),
        ("KPIMON_WINDOWS__EMIT_INTERVAL", "2", "windows", "emit_interval", 2.0),
        ("KPIMON_WORKER__PROCESSING_GUARANTEE", "exactly_once", "worker",
         "processing_guarantee", "exactly_once"),
    ],
)
def test_environment_names_and_aliases(
    name: str, value: str, section: str, key: str, expected: object
) -> None:
    settings = load_settings(None, {name: value})
    assert getattr(getattr(settings, section), key) == expected


def test_unrelated_environment_is_ignored() -> None:
    settings = load_settings(None, {"PATH": "/bin", "KPIMON_DEMO_RATE": "5", "KAFKA_PORT": "1"})
    assert settings == Settings()


def test_sla_cell_override_changes_only_that_cell(tmp_path: Path) -> None:
    path = write(tmp_path, "[sla_targets.chat]\nnormal = 45\n[sla_targets.email]\nurgent = 1800\n")
    targets = dict(load_settings(path, {}).kpi_rules().sla_targets)
    expected = dict(SPEC_SLA)
    expected[("chat", "normal")] = 45.0
    expected[("email", "urgent")] = 1800.0
    assert targets == expected
    # Default targets are not mutated by an override.
    assert default_sla_targets() == SPEC_SLA


# --- invalid configuration -------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "setting"),
    [
        ("[rules]\norphan_timeout = -5\n", "rules.orphan_timeout"),
        ("[rules]\norphan_timeout = 0\n", "rules.orphan_timeout"),
        ("[rules]\nallowed_lateness = -1\n", "rules.allowed_lateness"),
        ("[rules]\nmax_clock_skew = -0.5\n", "rules.max_clock_skew"),
        ("[rules]\nticket_retention = 0\n", "rules.ticket_retention"),
        ("[rules]\nfcr_window = -1\n", "rules.fcr_window"),
        ("[rules]\nat_risk_fraction = 1.5\n", "rules.at_risk_fraction"),
        ("[rules]\nat_risk_fraction = 0\n", "rules.at_risk_fraction"),
        ("[rules]\norphan_timeout = inf\n", "rules.orphan_timeout"),
        ("[rules]\nticket_retention = nan\n", "rules.ticket_retention"),
        ("[rules]\norphan_timeout = \"ten minutes\"\n", "rules.orphan_timeout"),
        ("[rules]\norphan_timout = 600\n", "rules.orphan_timout"),
        ("[kafka]\npartitions = 0\n", "kafka.partitions"),
        ("[http]\nport = 70000\n", "http.port"),
        ("[windows]\nemit_interval = 0\n", "windows.emit_interval"),
        ("[worker]\nprocessing_guarantee = \"maybe\"\n", "worker.processing_guarantee"),
        ("[topics]\ntickets = \"bad topic\"\n", "topics.tickets"),
        ("[topics]\nkpis = \"\"\n", "topics.kpis"),
        ("[topics]\ndeadletter = \"dl/1\"\n", "topics.deadletter"),
        ("[topics]\nsurveys = \"" + "s" * 250 + "\"\n", "topics.surveys"),
        ("[rulez]\norphan_timeout = 600\n", "rulez"),
        ("unknown_top_level = 1\n", "unknown_top_level"),
        ("rules = 5\n", "rules"),
        ("[sla_targets.fax]\nnormal = 10\n", "'fax'"),
        ("[sla_targets.chat]\nasap = 10\n", "'asap'"),
        ("[sla_targets.chat]\nnormal = 0\n", "chat/normal"),
        ("[sla_targets.chat]\nnormal = -3\n", "chat/normal"),
        ("[sla_targets.chat]\nnormal = inf\n", "sla_targets.chat.normal"),
        ("[sla_targets.chat]\nnormal = \"fast\"\n", "sla_targets.chat.normal"),
        ("[sla_targets]\nchat = 5\n", "sla_targets.chat"),
    ],
)
def test_invalid_values_name_the_offending_setting(
    tmp_path: Path, toml: str, setting: str
) -> None:
    path = write(tmp_path, toml)
    message = config_error(path)
    assert setting in message
    assert str(path) in message.splitlines()[0]


def test_unknown_sla_channel_message_lists_the_valid_ones(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, "[sla_targets.fax]\nnormal = 10\n"))
    assert "sla_targets" in message and "'fax'" in message
    assert "phone, chat, email, messaging, web, social" in message


@pytest.mark.parametrize(
    ("environ", "setting"),
    [
        ({"KPIMON_RULES__ORPHAN_TIMEOUT": "-1"}, "rules.orphan_timeout"),
        ({"KPIMON_RULES__ORPHAN_TIMEOUT": "soon"}, "rules.orphan_timeout"),
        ({"KPIMON_RULES__ORPHAN_TIMEOUT": "inf"}, "rules.orphan_timeout"),
        ({"KPIMON_PARTITIONS": "many"}, "kafka.partitions"),
        ({"KPIMON_PARTITIONS": "0"}, "kafka.partitions"),
        ({"KPIMON_HTTP_PORT": "-1"}, "http.port"),
        ({"KPIMON_TOPIC_TICKETS": "no spaces"}, "topics.tickets"),
        ({"KPIMON_RULES__NOPE": "1"}, "rules.nope"),
        ({"KPIMON_NOPE__X": "1"}, "nope"),
    ],
)
def test_invalid_environment_names_the_offending_setting(
    environ: dict[str, str], setting: str
) -> None:
    message = config_error(None, environ)
    assert setting in message
    assert "environment" in message.splitlines()[0]


def test_environment_on_a_non_table_file_value_is_a_config_error(tmp_path: Path) -> None:
    # `rules = 5` in the file plus KPIMON_RULES__X: reported, not a TypeError.
    path = write(tmp_path, "rules = 5\n")
    message = config_error(path, {"KPIMON_RULES__ORPHAN_TIMEOUT": "900"})
    assert "rules" in message


def test_every_problem_is_listed_one_per_line(tmp_path: Path) -> None:
    path = write(tmp_path, """
[rules]
orphan_timeout = -5
[topics]
tickets = "bad topic"
[kafka]
nope = 1
[bogus]
x = 1
""")
    lines = config_error(path, {"KPIMON_HTTP_PORT": "99999"}).splitlines()
    assert lines[0].startswith("invalid configuration")
    problems = sorted(line.strip().split(":")[0] for line in lines[1:])
    assert problems == ["bogus", "http.port", "kafka.nope", "rules.orphan_timeout",
                        "topics.tickets"]


def test_every_sla_problem_is_reported(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, "[sla_targets.fax]\nnormal = 1\n"
                                           "[sla_targets.chat]\nasap = 1\nlow = 0\n"))
    assert "'fax'" in message and "'asap'" in message and "chat/low" in message


def test_bad_toml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[rules\norphan_timeout = \n")
    message = config_error(path)
    assert "not valid TOML" in message
    assert str(path) in message
    assert "line 1" in message


def test_missing_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    message = config_error(path)
    assert str(path) in message
    assert "No such file" in message
    message = config_error(None, {"KPIMON_CONFIG": str(path)})
    assert str(path) in message


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    assert str(tmp_path) in config_error(tmp_path)


# --- kpimon check-config ----------------------------------------------------------------

BAD_FILE = """
[rules]
orphan_timeout = -5
at_risk_fraction = 2
[topics]
tickets = "bad topic"
"""


def test_check_config_prints_the_effective_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "[rules]\norphan_timeout = 900\n")
    monkeypatch.setenv("KPIMON_PARTITIONS", "6")
    assert main(["check-config", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert printed["rules"]["orphan_timeout"] == 900
    assert printed["kafka"]["partitions"] == 6
    assert Settings.model_validate(printed) == load_settings(path, {"KPIMON_PARTITIONS": "6"})
    assert err == ""


def test_check_config_with_a_bad_file_exits_2_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BAD_FILE)
    assert main(["check-config", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.rstrip("\n").splitlines()
    assert lines[0].startswith("kpimon: invalid configuration")
    assert str(path) in lines[0]
    assert len(lines) == 4
    assert sorted(line.split(":")[0].strip() for line in lines[1:]) == [
        "rules.at_risk_fraction", "rules.orphan_timeout", "topics.tickets",
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [("[rules\n", "not valid TOML"), (None, "cannot read config file")],
)
def test_check_config_unreadable_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, words: str
) -> None:
    path = write(tmp_path, text) if text is not None else tmp_path / "missing.toml"
    assert main(["check-config", "--config", str(path)]) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1
    assert err.startswith("kpimon: ") and words in err and str(path) in err


def test_check_config_as_a_process(tmp_path: Path) -> None:
    path = write(tmp_path, BAD_FILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPIMON_")}
    env["KPIMON_HTTP_PORT"] = "not-a-port"
    proc = subprocess.run(
        [sys.executable, "-m", "kpimon.cli", "check-config", "--config", str(path)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.rstrip("\n").splitlines()
    assert lines[0].startswith("kpimon: invalid configuration")
    assert sorted(line.split(":")[0].strip() for line in lines[1:]) == [
        "http.port", "rules.at_risk_fraction", "rules.orphan_timeout", "topics.tickets",
    ]
