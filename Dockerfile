# The orderstream worker image: python:3.11-slim with the package and its dependencies only,
# running as a non-root user. Dependencies come from requirements/runtime.lock (exact versions,
# hashes checked), the same pins the tests ran with; the package's wheel is built in a
# throwaway stage, so nothing used to build (pip's cache, sources, setuptools) is left.
#   docker build -t orderstream .
#   docker run -e REDIS_URL=redis://redis:6379/0 orderstream            # a worker
#   docker run -e REDIS_URL=... orderstream demo --count 20             # any other command
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements/build.lock ./requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/build.lock
COPY pyproject.toml README.md ./
COPY executor ./executor
COPY producer ./producer
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin orderstream
COPY requirements/runtime.lock /tmp/runtime.lock
RUN pip install --no-cache-dir --no-compile --require-hashes -r /tmp/runtime.lock \
  && rm /tmp/runtime.lock
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-compile --no-deps /wheels/*.whl && rm -rf /wheels
USER 10001
# Logs are JSON lines on stderr (ORDERSTREAM_LOG_FORMAT=text for people); metrics, /healthz
# and /readyz on 9464, reachable on the container network only unless published.
ENV PYTHONUNBUFFERED=1 ORDERSTREAM_METRICS_PORT=9464
EXPOSE 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2)"]
ENTRYPOINT ["orderstream"]
CMD ["worker"]
