# The router as a container: `engine serve` on port 8080, policy mounted, state in /data.
#
#   docker build -t llm-router .
#   docker run -p 8080:8080 -v $PWD/policies/production.example.yaml:/etc/engine/policy.yaml:ro \
#     -v router-data:/data -e OPENAI_API_KEY -e ANTHROPIC_API_KEY -e GEMINI_API_KEY llm-router
#
# docs/operations.md ("Containers") has the compose file with Redis, Prometheus and Grafana.

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY adapters ./adapters
COPY schemas ./schemas
COPY policies ./policies
RUN pip install --no-cache-dir --no-compile --prefix=/install .

FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENGINE_POLICY=/etc/engine/policy.yaml
COPY --from=build /install /usr/local
# a fixed non-root user; /data holds the key store and the decision log (mount a volume there)
RUN groupadd --system --gid 10001 engine \
    && useradd --system --uid 10001 --gid engine --home-dir /data --no-create-home engine \
    && mkdir -p /data /etc/engine \
    && chown engine:engine /data
# the bundled offline policy, replaced by mounting yours at /etc/engine/policy.yaml
COPY --chown=engine:engine policies/default.yaml /etc/engine/policy.yaml
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
# keys in /data/keys.db (created empty on first start: add keys with `engine keys create` or the
# admin API); the decision log in /data/decisions.db
ENTRYPOINT ["engine", "serve", "--host", "0.0.0.0", "--port", "8080"]
CMD ["--policy", "/etc/engine/policy.yaml", "--db", "/data/keys.db", "--create", "--log-db", "/data/decisions.db", "--log-format", "json"]
