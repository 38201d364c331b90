# syntax=docker/dockerfile:1
# The kpimon image: `kpimon worker`, `kpimon simulate`, `kpimon tail`, ... (ENTRYPOINT kpimon).
#
#   docker build -t kpimon:0.1.0 .
#   docker run --rm -p 6066:6066 -e KPIMON_BOOTSTRAP=broker:9092 kpimon:0.1.0 worker
#
# Built-in defaults (/etc/kpimon/kpimon.toml, replace it or set KPIMON_CONFIG): HTTP on
# 0.0.0.0:6066, worker state in /var/lib/kpimon (mount a volume there; it is not a
# VOLUME, so one-shot containers like the simulator leave no anonymous volumes behind).
# The topic creation script used by deploy/compose: /opt/kpimon/share/create_topics.py.
# See docs/deploy.md.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what `pip install .` needs (pyproject's readme and the four packages).
COPY pyproject.toml README.md ./
COPY kpimon ./kpimon
COPY models ./models
COPY streams ./streams
COPY exporters ./exporters
RUN python -m venv /opt/kpimon \
    && /opt/kpimon/bin/pip install . \
    && /opt/kpimon/bin/kpimon schema >/dev/null

FROM python:3.11-slim
ARG KPIMON_UID=10001
ENV PATH=/opt/kpimon/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KPIMON_CONFIG=/etc/kpimon/kpimon.toml
RUN groupadd --system --gid "$KPIMON_UID" kpimon \
    && useradd --system --uid "$KPIMON_UID" --gid kpimon --home-dir /var/lib/kpimon \
       --no-create-home --shell /usr/sbin/nologin kpimon \
    && mkdir -p /etc/kpimon /var/lib/kpimon /opt/kpimon/share \
    && chown kpimon:kpimon /var/lib/kpimon \
    && printf '%s\n' \
       '# Container defaults of the kpimon image. Mount your own file over this one' \
       '# (every setting: kpimon.example.toml beside it) or set KPIMON_CONFIG.' \
       '[http]' 'host = "0.0.0.0"' 'port = 6066' \
       '[worker]' 'data_dir = "/var/lib/kpimon"' >/etc/kpimon/kpimon.toml
COPY --from=build /opt/kpimon /opt/kpimon
COPY deploy/local-kafka/create_topics.py /opt/kpimon/share/create_topics.py
COPY deploy/kpimon.example.toml /etc/kpimon/kpimon.example.toml
USER kpimon:kpimon
WORKDIR /var/lib/kpimon
EXPOSE 6066
ENTRYPOINT ["kpimon"]
CMD ["worker"]
