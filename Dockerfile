# syntax=docker/dockerfile:1
# The one tickmesh image: the `tickmesh` binary on distroless (glibc, CA certificates, no shell),
# running as the non-root user 65532. Every Deployment in k8s/ runs it with
# `serve --target ...`, the migration Job with `migrate`.
#
#   docker build -t tickmesh:dev .
#
# The store, the bus and TLS are pure Rust (tokio-postgres, redis, rustls) and SQLite and the time
# zone database are compiled in, so the binary needs nothing from the image but glibc and libgcc.

# The Rust of the workspace's rust-version (Cargo.toml), on the Debian release of the runtime
# image below, so the binary links against the same glibc.
FROM rust:1.89-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and the build output between builds; the binary is copied
# out of the cache mount, which does not end up in the layer. The release profile keeps line
# tables for profiling (about 95 MB); the image drops them (about 19 MB). Panic messages still
# name file and line; backtraces show function names.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tickmesh \
    && install -D -m 0755 target/release/tickmesh /out/tickmesh \
    && strip --strip-debug /out/tickmesh

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/tickmesh /tickmesh
USER 65532:65532
# gRPC: ingestion 7401, computation 7402, caching 7403, query 7404; Prometheus /metrics 9400.
EXPOSE 7401 7402 7403 7404 9400
ENTRYPOINT ["/tickmesh"]
CMD ["--help"]
