# The maelab server: no libtorch, a small image.
FROM rust:1.95-bookworm AS build
WORKDIR /app
COPY . .
RUN cargo build --release --locked -p maelab-server

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /app/target/release/maelab /usr/local/bin/maelab
COPY static /app/static
ENV MAELAB_STATIC_DIR=/app/static MAELAB_BIND=0.0.0.0:8080
EXPOSE 8080
CMD ["maelab", "serve"]
