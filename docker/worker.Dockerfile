# The maelab worker: built against torch 2.11 from PyPI (with its CUDA
# libraries), which stays in the image at the same path, where the binary's
# rpath points.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv && rm -rf /var/lib/apt/lists/*
WORKDIR /app
RUN python3 -m venv /app/.venv && /app/.venv/bin/pip install --no-cache-dir torch==2.11.0
COPY . .
RUN bash -c 'source scripts/env.sh && cargo build --release --locked -p maelab-worker'

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 libgomp1 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /app/.venv /app/.venv
COPY --from=build /app/target/release/maelab-worker /usr/local/bin/maelab-worker
ENV MAELAB_CACHE_DIR=/var/cache/maelab
CMD ["maelab-worker", "run"]
