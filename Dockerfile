# The engine's image for compose.yaml: the package and its console script, nothing else.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY projections projections
COPY adapters adapters
COPY consumers consumers
RUN pip install --no-cache-dir . && useradd --system optout
USER optout
ENTRYPOINT []
CMD ["optout-sync", "ingest"]
