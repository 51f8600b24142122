# flux-mcp as a network service: MCP streamable HTTP at :8000/mcp, health at :8000/healthz.
# Needs FLUX_MCP_AUTH_TOKENS because it binds to 0.0.0.0. Pass-through (FLUX_MCP_AUTH=passthrough) on 0.0.0.0
# is refused unless the command ends in --allow-unauthenticated: only behind a proxy that authenticates users.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# httpx2 trusts the operating system's certificate store (truststore): the slim image needs CA certificates.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 flux
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
# otel: OTEL_EXPORTER_OTLP_ENDPOINT=… exports traces (docs/deploy.md#traces); /metrics needs no extra.
RUN pip install ".[postgres,otel]" && rm -rf /app/src

USER flux
ENV FLUX_MCP_DB=/home/flux/.local/share/flux-mcp/history.db
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["flux-mcp", "serve", "--transport", "http", "--host", "0.0.0.0", "--port", "8000"]
