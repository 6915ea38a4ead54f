# The API: validation, the store and the queue producer. No torch: the API never loads a model.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY docker/requirements-api.txt /app/docker/
RUN pip install -r docker/requirements-api.txt
COPY pyproject.toml README.md /app/
COPY schemas /app/schemas
COPY services /app/services
COPY workers /app/workers
COPY farm_config /app/farm_config
# --no-deps: the API's dependencies are the list above, without the model stack.
RUN pip install --no-deps . && useradd --uid 1000 --create-home farm
USER farm

EXPOSE 8321
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import httpx; httpx.get('http://127.0.0.1:8321/healthz').raise_for_status()"
CMD ["mattefarm", "api", "--host", "0.0.0.0", "--port", "8321"]
