#!/usr/bin/env bash
# Builds the ntpd-sim image with no registry: the release binaries on this
# host (cargo), their root file system (docker/rootfs.sh), then FROM scratch
# (docker/Dockerfile.local). Tags it ${NTPD_SIM_IMAGE:-ntpd-sim:local}, the
# image docker-compose.yml runs.
#
#   docker/build-local.sh            # then: docker compose up
set -euo pipefail
cd "$(dirname "$0")/.."
image=${NTPD_SIM_IMAGE:-ntpd-sim:local}
target_dir=${CARGO_TARGET_DIR:-target}

cargo build --release --locked -p ntp-daemon -p ntp-client --bins
bash docker/rootfs.sh docker/rootfs "$target_dir/release"
# The legacy builder is enough for FROM scratch + COPY, and is there when
# the buildx plugin is not.
DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build --quiet -f docker/Dockerfile.local -t "$image" docker >/dev/null
echo "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.1f MB", $1 / 1e6 }'))"
