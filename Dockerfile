# syntax=docker/dockerfile:1
# One multi-stage build for the four services; pick one with --target gateway|brain|transcriber|ledger.
# Images cannot be built on the development machines (no Docker engine there); scripts/test checks
# this file statically.

FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY proto proto
COPY migrations migrations
COPY shared shared
COPY services services
COPY tools tools
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gateway --bin brain --bin transcriber --bin ledger \
 && mkdir -p /out \
 && cp target/release/gateway target/release/brain target/release/transcriber target/release/ledger /out/

FROM debian:bookworm-20241111-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /app switchboard \
 && mkdir -p /app/data \
 && chown switchboard:switchboard /app/data
WORKDIR /app
ENV DATA_DIR=/app/data

FROM runtime AS brain
COPY --from=build /out/brain /usr/local/bin/brain
USER switchboard
HEALTHCHECK --interval=15s --timeout=5s --retries=3 CMD ["brain", "healthcheck"]
ENTRYPOINT ["brain"]

FROM runtime AS ledger
COPY --from=build /out/ledger /usr/local/bin/ledger
USER switchboard
HEALTHCHECK --interval=15s --timeout=5s --retries=3 CMD ["ledger", "healthcheck"]
ENTRYPOINT ["ledger"]

FROM runtime AS transcriber
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/transcriber /usr/local/bin/transcriber
USER switchboard
HEALTHCHECK --interval=15s --timeout=5s --retries=3 CMD ["transcriber", "healthcheck"]
ENTRYPOINT ["transcriber"]

FROM runtime AS gateway
USER root
# WhatsApp Web: Debian's Chromium and Node for the whatsapp-web.js sidecar (no browser download).
RUN apt-get update \
 && apt-get install -y --no-install-recommends chromium nodejs npm fonts-liberation \
 && rm -rf /var/lib/apt/lists/*
COPY services/gateway/wa-sidecar/package.json services/gateway/wa-sidecar/package-lock.json /usr/local/share/switchboard/wa-sidecar/
RUN cd /usr/local/share/switchboard/wa-sidecar \
 && PUPPETEER_SKIP_DOWNLOAD=true npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force
COPY services/gateway/wa-sidecar/index.mjs services/gateway/wa-sidecar/PROTOCOL.md /usr/local/share/switchboard/wa-sidecar/
ENV WA_SIDECAR_DIR=/usr/local/share/switchboard/wa-sidecar \
    CHROMIUM_PATH=/usr/bin/chromium \
    WA_SESSION_DIR=/app/data/wa-session
COPY --from=build /out/gateway /usr/local/bin/gateway
USER switchboard
HEALTHCHECK --interval=15s --timeout=5s --retries=3 CMD ["gateway", "healthcheck"]
ENTRYPOINT ["gateway"]
