# syntax=docker/dockerfile:1
# The mcptrust image: the release build of the `mcptrust` binary on distroless, non-root.
#   docker build -t REGISTRY/mcptrust:0.1.0 .
# tests/chart.rs checks that the build stage copies every file the build reads.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the bench target, so cargo wants its file even for --bin.
COPY benches ./benches
# The registry and target caches only speed up rebuilds; the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mcptrust \
    && cp target/release/mcptrust /mcptrust

# glibc and libgcc, CA certificates and a nonroot user (65532); no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /mcptrust /mcptrust
USER 65532:65532
# mimalloc (the binary's allocator) disables transparent huge pages for the process: on
# nodes where THP is "always", its arenas would otherwise be backed by 2 MiB pages and
# the idle RSS would grow by several MiB (README, Performance).
ENV MIMALLOC_ALLOW_THP=0
# The admin port (/livez, /readyz, /metrics) and the webhook's HTTPS port.
EXPOSE 8080 8443
ENTRYPOINT ["/mcptrust"]
CMD ["run"]
