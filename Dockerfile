# syntax=docker/dockerfile:1
# The ntpd-sim image, built the usual multi-stage way (needs the public
# rust image): `docker build -t ntpd-sim:local .`, or `docker compose up
# --build`. The result holds the two binaries, the shared libraries they
# load, and nothing else (docker/rootfs.sh says exactly what); it runs as
# user 65534 and needs no capability: the servers listen on port 12300 and
# discipline their own virtual clocks, never the host's.
# With no registry, docker/build-local.sh makes the same image from
# binaries built on the host (docker/Dockerfile.local).

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY tests tests
RUN cargo build --release --locked -p ntp-daemon -p ntp-client --bins
COPY docker/rootfs.sh docker/rootfs.sh
RUN sh docker/rootfs.sh /rootfs target/release

FROM scratch
COPY --from=build /rootfs/ /
LABEL org.opencontainers.image.title="ntpd-sim" \
      org.opencontainers.image.description="NTP daemon on a virtual clock (ntpd-sim) and query tool (ntp-query)" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
ENV PATH=/usr/local/bin
USER 65534:65534
EXPOSE 12300/udp
CMD ["ntpd-sim", "serve", "--port", "12300"]
