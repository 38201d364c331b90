#!/usr/bin/env bash
# The live demo: a local Kafka broker, a realistic simulator (the last hour first, then
# live), and a worker exporting metrics. Ctrl-C stops everything it started.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/setup.sh

export KAFKA_PORT=${KAFKA_PORT:-9092}
export KPIMON_BOOTSTRAP=${KPIMON_BOOTSTRAP:-127.0.0.1:$KAFKA_PORT}
export KPIMON_HTTP_PORT=${KPIMON_HTTP_PORT:-6066}
export KPIMON_PYTHON="$repo/.venv/bin/python"
mkdir -p .local/demo
deploy/local-kafka/kafkactl start

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo "demo: stopping..." >&2
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KPIMON_DEMO_KEEP_KAFKA:-0}" != 1 ]; then deploy/local-kafka/kafkactl stop; fi
}
trap cleanup INT TERM EXIT

KPIMON_WORKER__DATA_DIR="$repo/.local/demo/worker" .venv/bin/kpimon worker \
  >.local/demo/worker.log 2>&1 &
pids+=($!)
.venv/bin/kpimon simulate --realtime --duration 0 --backfill 3600 --rate "${KPIMON_DEMO_RATE:-120}" \
  --duplicates 0.005 --bad 0.001 2>.local/demo/simulator.log &
pids+=($!)

for _ in $(seq 1 60); do
  curl -fs "http://127.0.0.1:$KPIMON_HTTP_PORT/metrics" >/dev/null 2>&1 && break
  sleep 1
done
cat <<MSG

kpimon demo is running.
  Kafka bootstrap      $KPIMON_BOOTSTRAP   (topics support.tickets, support.surveys -> support.kpis, support.deadletter)
  Wallboard            http://127.0.0.1:$KPIMON_HTTP_PORT/wallboard
  Prometheus metrics   http://127.0.0.1:$KPIMON_HTTP_PORT/metrics
  KPI API (JSON)       http://127.0.0.1:$KPIMON_HTTP_PORT/api/kpis
  KPI window records   .venv/bin/kpimon tail --bootstrap $KPIMON_BOOTSTRAP
  Logs                 .local/demo/worker.log, .local/demo/simulator.log
Press Ctrl-C to stop.
MSG
rc=0
wait -n "${pids[@]}" || rc=$?
# 130/143: the process group got Ctrl-C or SIGTERM, which is the normal way out.
if [ "$rc" != 130 ] && [ "$rc" != 143 ]; then
  echo "demo: the worker or the simulator exited (status $rc); see .local/demo/*.log" >&2
  exit 1
fi
