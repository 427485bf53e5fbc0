# syntax=docker/dockerfile:1
# One multi-stage build for the four services; pick one with --target gateway|brain|transcriber|ledger.
# Images cannot be built on the development machines (no Docker engine there); scripts/test checks
# this file statically and with hadolint. Releases are built for amd64 and arm64 by
# .github/workflows/release.yml.
# Bases: Debian 13 (trixie, the stable release receiving security fixes; the moving "13" tag
# follows its point releases) and Node.js 24 LTS for the WhatsApp Web sidecar (Debian's
# nodejs is 20, past its end of life upstream).

FROM rust:1.95.0-slim-trixie AS build
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

# The sidecar's packages, installed with the Node.js they run on (no browser download).
FROM node:24-trixie-slim AS sidecar
WORKDIR /sidecar
COPY services/gateway/wa-sidecar/package.json services/gateway/wa-sidecar/package-lock.json ./
RUN PUPPETEER_SKIP_DOWNLOAD=true npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force
COPY services/gateway/wa-sidecar/index.mjs services/gateway/wa-sidecar/PROTOCOL.md ./

FROM debian:13-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 switchboard \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /app switchboard \
 && install -d -m 0700 -o switchboard -g switchboard /app/data
WORKDIR /app
# mimalloc (the services' allocator) without transparent huge pages, whatever the host's THP
# mode: huge pages cost each service 10-20 MB more RSS (docs/BENCHMARKS.md, issue 26).
ENV DATA_DIR=/app/data \
    MIMALLOC_ALLOW_THP=0

FROM runtime AS brain
COPY --from=build /out/brain /usr/local/bin/brain
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --retries=3 CMD ["brain", "healthcheck"]
ENTRYPOINT ["brain"]

FROM runtime AS ledger
COPY --from=build /out/ledger /usr/local/bin/ledger
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --retries=3 CMD ["ledger", "healthcheck"]
ENTRYPOINT ["ledger"]

FROM runtime AS transcriber
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/transcriber /usr/local/bin/transcriber
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --retries=3 CMD ["transcriber", "healthcheck"]
ENTRYPOINT ["transcriber"]

FROM runtime AS gateway
USER root
# WhatsApp Web: Debian's Chromium, and the sidecar with its Node.js (from the sidecar stage).
RUN apt-get update \
 && apt-get install -y --no-install-recommends chromium fonts-liberation libstdc++6 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=sidecar /usr/local/bin/node /usr/local/bin/node
COPY --from=sidecar /sidecar /usr/local/share/switchboard/wa-sidecar
ENV WA_SIDECAR_DIR=/usr/local/share/switchboard/wa-sidecar \
    CHROMIUM_PATH=/usr/bin/chromium \
    WA_SESSION_DIR=/app/data/wa-session
COPY --from=build /out/gateway /usr/local/bin/gateway
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --retries=3 CMD ["gateway", "healthcheck"]
ENTRYPOINT ["gateway"]
