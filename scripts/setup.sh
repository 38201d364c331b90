#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: Python venv with kpimon and its tools, the
# Apache Kafka broker jars (fetched once with Maven, then cached), and with --browser
# Debian's Chromium and ChromeDriver for the browser tests.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

say() { printf 'setup: %s\n' "$*" >&2; }

need() {
  command -v "$1" >/dev/null 2>&1 || { say "missing '$1': $2"; exit 1; }
}
need java "install a Java 17 runtime (Debian: openjdk-17-jre-headless)"
need mvn "install Maven (Debian: maven)"

py=$(command -v python3.11 || command -v python3 || true)
[ -n "$py" ] || { say "missing Python 3.11"; exit 1; }
if ! "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  say "kpimon needs Python 3.11 (found $("$py" --version))"; exit 1
fi

# Headless Chromium and its driver, from Debian's packages, for the wallboard's browser test
# (scripts/test.sh asks for them with --browser; the demo does not need them).
if [ "${1:-}" = "--browser" ] && { ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing chromium and chromium-driver (Debian packages) for the browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    say "missing chromium/chromedriver: run 'apt-get install chromium chromium-driver' as root"
    exit 1
  fi
fi

# promtool and amtool (and the prometheus/alertmanager binaries) from Debian's packages,
# for the tests of the generated alert rules and Alertmanager configuration.
if ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing prometheus and prometheus-alertmanager (Debian packages) for promtool/amtool"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      prometheus prometheus-alertmanager >/dev/null
    # Only their command-line tools are wanted: stop the daemons the packages may have
    # started (ports 9090/9093), as they were not running before this install.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      systemctl disable --now prometheus prometheus-alertmanager >/dev/null 2>&1 || true
    fi
  else
    say "missing promtool/amtool (the deploy tests need them): run" \
      "'apt-get install prometheus prometheus-alertmanager' as root"
  fi
fi

stamp=.venv/.kpimon-installed
if [ ! -x .venv/bin/python ]; then
  say "creating the virtualenv in .venv"
  "$py" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  say "installing kpimon and its dependencies into .venv (first run takes a minute)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # rocksdb: the on-disk table store (rocksdict), which the suite tests too.
  .venv/bin/python -m pip install --quiet -e '.[dev,rocksdb]'
  touch "$stamp"
fi

KPIMON_PYTHON="$repo/.venv/bin/python" deploy/local-kafka/kafkactl fetch
say "ready"
