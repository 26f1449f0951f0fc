#!/usr/bin/env bash
# The compose stack end to end (docker-compose.yml, docs/compose.md): build
# the image with no registry (docker/build-local.sh), bring the chain up,
# wait until every tier serves its stratum (1, 2, 2, 3) within 1 ms of
# stratum 1, stop stratum2a and check that stratum3 stays synchronized
# through stratum2b. Everything it creates (containers, the network, the
# image) has a name of its own and is removed on exit, failure included.
# Bounded: about 2 minutes once the binaries are built; no step waits
# longer than its own limit. Needs docker, compose (the plugin or
# docker-compose) and python3; fails, never skips, without them.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "compose.sh: FAILED: $*" >&2; exit 1; }

command -v docker >/dev/null || fail "docker is not installed"
command -v python3 >/dev/null || fail "python3 is not installed"
timeout 20 docker info >/dev/null 2>&1 || fail "the docker daemon does not answer"
if docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose_cmd=(docker-compose)
else
    fail "neither 'docker compose' nor 'docker-compose' is installed"
fi

project="ntpdsimtest$$"
export NTPD_SIM_IMAGE="ntpd-sim:test-$$"
compose() { "${compose_cmd[@]}" -p "$project" "$@"; }
passed=0
pass() { passed=$((passed + 1)); echo "ok: $*"; }

cleanup() {
    status=$?
    if [ "$status" != 0 ]; then
        echo "--- the stack's logs (last lines) ---"
        compose logs --no-color --tail 30 2>&1 || true
    fi
    compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
    rm -f "${unordered:-}"
    docker image rm -f "$NTPD_SIM_IMAGE" >/dev/null 2>&1 || true
    if [ "$status" = 0 ]; then echo "compose: $passed passed, 0 failed"; else echo "compose: $passed passed, 1 failed"; fi
}
trap cleanup EXIT
trap "exit 143" INT TERM

# One JSON report of the servers named, as the client container sees them.
query() {
    local servers=()
    for name in "$@"; do servers+=("$name:12300"); done
    timeout 20 "${compose_cmd[@]}" -p "$project" exec -T client \
        ntp-query --json -n 2 -i 0.1 -t 1 "${servers[@]}" || true
}

# True once strata 1, 2, 2, 3 hold, every clock within 1 ms of stratum1's
# and updated within the last 10 s, three checks in a row (60 at most).
converged() {
    local in_a_row=0
    for _ in $(seq 60); do
        if query stratum1 stratum2a stratum2b stratum3 |
            python3 tests/compose_check.py stratum1=1 stratum2a=2 stratum2b=2 stratum3=3 \
                --fresh stratum2a=10 --fresh stratum2b=10 --fresh stratum3=10; then
            in_a_row=$((in_a_row + 1))
            [ "$in_a_row" = 3 ] && return 0
        else
            in_a_row=0
        fi
        sleep 1
    done
    return 1
}

echo "== build the image ($NTPD_SIM_IMAGE) with no registry"
bash docker/build-local.sh
[ "$(docker image inspect -f '{{.Config.User}}' "$NTPD_SIM_IMAGE")" = "65534:65534" ] || fail "image does not run as 65534"
# Its files: the two binaries, shared libraries, glibc's name-service
# configuration and passwd/group; the rest is what Docker adds to every
# container (.dockerenv, dev/, proc/, sys/, etc/hosts, ...).
probe=$(docker create "$NTPD_SIM_IMAGE")
files=$(docker export "$probe" | tar -t | grep -v '/$'; docker rm "$probe" >/dev/null)
extra=$(echo "$files" | grep -Ev '^(usr/local/bin/(ntpd-sim|ntp-query)|lib(64)?/.*\.so(\.[0-9]+)*|etc/(nsswitch\.conf|passwd|group|hosts|hostname|resolv\.conf|mtab)|\.dockerenv|dev/console)$' || true)
[ -z "$extra" ] || fail "the image holds more than the binaries and their libraries: $extra"
grep -qx 'usr/local/bin/ntp-query' <<<"$files" || fail "the image has no ntp-query"
pass "image built: user 65534, $(echo "$files" | wc -l) files, $(docker image inspect -f '{{.Size}}' "$NTPD_SIM_IMAGE" | awk '{ printf "%.1f MB", $1 / 1e6 }')"

echo "== up (each tier starts once the tier above is healthy)"
timeout 150 "${compose_cmd[@]}" -p "$project" up -d || fail "compose up"
for service in stratum1 stratum2a stratum2b stratum3 client; do
    id=$(compose ps -q "$service")
    [ -n "$id" ] || fail "$service has no container"
    uid=$(docker top "$id" -o pid,uid | awk 'NR == 2 { print $2 }')
    [ "$uid" = 65534 ] || fail "$service runs as uid $uid, not 65534"
done
pass "five containers up, every process unprivileged (uid 65534)"

echo "== convergence: strata 1, 2, 2, 3, every clock within 1 ms of stratum1, three checks in a row"
converged || fail "the chain did not converge within 60 checks"
pass "chain converged"

echo "== stop stratum2a: stratum3 must stay synchronized at stratum 3, within 1 ms, and end up following stratum2b"
timeout 30 "${compose_cmd[@]}" -p "$project" stop --timeout 5 stratum2a || fail "compose stop stratum2a"
# An unreachable upstream is dropped once its reach register empties: 8
# polls of at most 4 s. Watch for 40 s at least, then until stratum3
# follows stratum2b, its clock updated within the last 10 s (so it is being
# steered, not holding over), 90 s at most; every check must hold all along.
stopped_at=$SECONDS
follows=0
switched_after=
while [ $((SECONDS - stopped_at)) -lt 90 ]; do
    report=$(query stratum1 stratum2b stratum3)
    echo "$report" | python3 tests/compose_check.py stratum1=1 stratum2b=2 stratum3=3 ||
        fail "stratum3 lost synchronization $((SECONDS - stopped_at)) s after stratum2a stopped"
    follows=0
    if echo "$report" | python3 tests/compose_check.py stratum1=1 --follows stratum3=stratum2b --fresh stratum3=10 \
        >/dev/null; then
        follows=1
        switched_after=${switched_after:-$((SECONDS - stopped_at))}
        [ $((SECONDS - stopped_at)) -ge 40 ] && break
    fi
    sleep 2
done
[ "$follows" = 1 ] || fail "stratum3 does not follow stratum2b (or is not updated by it) 90 s after stratum2a stopped"
pass "stratum3 synchronized all along for $((SECONDS - stopped_at)) s after stratum2a stopped," \
    "following stratum2b, its clock updated every few seconds, from ${switched_after} s on"

health=$(docker inspect -f '{{.State.Health.Status}}' "$(compose ps -q stratum3)")
[ "$health" = healthy ] || fail "stratum3's healthcheck says $health"
pass "stratum3's healthcheck (ntp-query) says healthy"

# (Into a variable first: grep -q ending the pipe early would fail it under pipefail.)
client_log=$(compose logs --no-color client)
grep -q 'stratum3:12300 .* 3  ' <<<"$client_log" || fail "the client printed no table with stratum3"
pass "the client service prints its table"

echo "== unordered: the same stack with every depends_on removed, brought up all at once (as after a power loss)"
compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || fail "compose down"
unordered="$PWD/.compose-unordered-$$.yml"
# Each depends_on block (the key and the lines indented under it) dropped.
python3 - docker-compose.yml >"$unordered" <<'PY'
import sys
out, block = [], None
for line in open(sys.argv[1]):
    indent = len(line) - len(line.lstrip())
    if line.strip().startswith("depends_on:"):
        block = indent
        continue
    if block is not None and line.strip() and indent > block:
        continue
    block = None
    out.append(line)
sys.stdout.write("".join(out))
PY
! grep -q depends_on "$unordered" || fail "depends_on left in the unordered variant"
unordered_compose=("${compose_cmd[@]}" -p "$project" -f "$unordered" --project-directory .)
timeout 150 "${unordered_compose[@]}" up -d || fail "compose up (unordered)"
started_at=$SECONDS
converged || fail "the unordered chain did not converge within 60 checks"
restarts=$(for service in stratum1 stratum2a stratum2b stratum3; do
    docker inspect -f '{{.RestartCount}}' "$("${unordered_compose[@]}" ps -q "$service")"; done | awk '{ n += $1 } END { print n }')
pass "unordered chain converged $((SECONDS - started_at)) s after up, $restarts container restarts"
