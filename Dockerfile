# sidecast container image.
#
#   docker build -t sidecast .            (podman build works the same)
#   docker run --rm --read-only --cap-drop=ALL -p 8080:8080 -p 9090:9090 \
#     -v "$PWD/sidecar.toml:/etc/sidecast/sidecar.toml:ro" \
#     -e SIDECAST_JWT_SECRET=... sidecast
#
# tests/container/check builds the runtime stage below and runs it so
# (podman: --read-only-tmpfs=false, as Kubernetes mounts nothing over /run).
#
# The configuration is read from /etc/sidecast/sidecar.toml (SIDECAST_CONFIG);
# mount a directory there (in Kubernetes: a ConfigMap, never with subPath,
# so that an edit reloads). No secret is in the image: give the JWT key
# through the environment or a mounted file. The process writes nothing but
# the optional publish socket, so the root filesystem can be read-only; put
# the socket on a shared volume (/run/sidecast).

# --- build -----------------------------------------------------------------
# pingora's build needs cmake and a C/C++ compiler; the full Rust image has
# the compilers, cmake is added.
FROM rust:1.95.0-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, built against stub sources, so that a change of the
# sources alone does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin sidecast \
 && rm -rf src
COPY src ./src
# The release profile keeps line tables (for profiling): the image gets the
# binary stripped (15 MB instead of about 100), and the debug information
# stays in this stage as /out/sidecast.debug, found by the binary's build id
# (see docs/operations.md: "Symbols for profiling").
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin sidecast \
 && mkdir -p /out \
 && objcopy --only-keep-debug target/release/sidecast /out/sidecast.debug \
 && objcopy --strip-all --add-gnu-debuglink=/out/sidecast.debug \
      target/release/sidecast /out/sidecast \
 && chmod 0755 /out/sidecast

# --- run -------------------------------------------------------------------
# Same Debian release as the builder, so the binary's glibc matches. No
# packages are added: the binary needs glibc alone, and its TLS clients
# (JWKS URL, rediss://) carry their own root certificates (webpki-roots),
# so ca-certificates (and the openssl it pulls in) would be dead weight.
FROM debian:12.12-slim
RUN groupadd --system --gid 10001 sidecast \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin sidecast \
 && install -d -o 10001 -g 10001 -m 0750 /run/sidecast \
 && install -d -m 0755 /etc/sidecast
COPY --from=build /out/sidecast /usr/local/bin/sidecast
COPY sidecar.toml /etc/sidecast/sidecar.toml
ENV SIDECAST_CONFIG=/etc/sidecast/sidecar.toml
# public (proxy + events), admin (/healthz /readyz /metrics); the publish
# API stays on loopback or the Unix socket and is not exposed.
EXPOSE 8080 9090
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# Kubernetes ignores HEALTHCHECK: the manifests probe /healthz and /readyz on
# the admin port, and the image carries no HTTP client to probe with.
#checkov:skip=CKV_DOCKER_2:Kubernetes probes /healthz and /readyz (k8s/); the image has no HTTP client for a HEALTHCHECK
ENTRYPOINT ["/usr/local/bin/sidecast"]
