#!/usr/bin/env bash
# bench/load.sh: load test of `POST /v1/decide` against the HTTP ceiling of this machine, on loopback.
#
# Starts the benchmark issuer (bench/issuer.rs: JWKS, real RS256 tokens, Verdict configs),
# Verdict, and the bare axum ceiling (bench/ceiling.rs), all on 127.0.0.1; then runs the same wrk
# load against each (a warm-up, then the measured run), with a rotating token per request
# (bench/decide.lua). Prints requests/s and p50/p99 latency per target and Verdict's throughput as a
# share of the ceiling's. Everything it starts is stopped on exit. See BENCHMARKS.md.
#
# Knobs (environment): THREADS CONNECTIONS DURATION WARMUP TOKENS ROUNDS UNCACHED=0|1 OPAQUE=0|1,
# CARGO_TARGET_DIR, and the ports CEILING_PORT VERDICT_PORT UNCACHED_PORT JWKS_PORT. With OPAQUE=1
# (the default) Verdict is also loaded with rotating opaque tokens, answered from its introspection
# cache after the first request for each (target `verdict-opaque`).

set -euo pipefail

THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
DURATION="${DURATION:-20s}"
WARMUP="${WARMUP:-5s}"
TOKENS="${TOKENS:-1000}"
ROUNDS="${ROUNDS:-1}"
UNCACHED="${UNCACHED:-1}"
OPAQUE="${OPAQUE:-1}"
CEILING_PORT="${CEILING_PORT:-18090}"
VERDICT_PORT="${VERDICT_PORT:-18080}"
UNCACHED_PORT="${UNCACHED_PORT:-18081}"
JWKS_PORT="${JWKS_PORT:-18091}"
GOAL=0.85

cd "$(dirname "${BASH_SOURCE[0]}")/.."
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk (Debian package)" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq wrk
fi

echo "building (release) verdict and the benchmark examples into ${TARGET_DIR}" >&2
cargo build --release --locked --bin verdict --example ceiling --example bench_issuer
verdict_bin="${TARGET_DIR}/release/verdict"
ceiling_bin="${TARGET_DIR}/release/examples/ceiling"
fixture_bin="${TARGET_DIR}/release/examples/bench_issuer"

work="$(mktemp -d)"
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ]; then
        for log in "$work"/*.log; do
            [ -e "$log" ] || continue
            echo "--- ${log##*/} (last lines)" >&2
            tail -n 20 "$log" >&2
        done
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits, bounded, until a command succeeds; gives up early if process `pid` (when given) has exited.
wait_for() {
    local what="$1" pid="$2"
    shift 2
    for _ in $(seq 1 300); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            echo "${what}: the process exited" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "timed out waiting for ${what}" >&2
    return 1
}

opaque_args=()
if [ "$OPAQUE" = 1 ]; then
    opaque_args=(--opaque-tokens-out "$work/opaque-tokens.txt")
fi
uncached_args=()
if [ "$UNCACHED" = 1 ]; then
    uncached_args=(--uncached-config-out "$work/verdict-uncached.yaml"
        --uncached-listen "127.0.0.1:${UNCACHED_PORT}")
fi
"$fixture_bin" --jwks-listen "127.0.0.1:${JWKS_PORT}" --count "$TOKENS" \
    --tokens-out "$work/tokens.txt" \
    --verdict-listen "127.0.0.1:${VERDICT_PORT}" --config-out "$work/verdict.yaml" \
    "${uncached_args[@]}" "${opaque_args[@]}" >"$work/fixture.log" 2>&1 &
pids+=($!)
wait_for "the bench fixture's files" "$!" test -s "$work/verdict.yaml"

# Each target: name, URL, pid, tokens file.
targets=()
"$ceiling_bin" "127.0.0.1:${CEILING_PORT}" >"$work/ceiling.log" 2>&1 &
pids+=($!)
targets+=("ceiling http://127.0.0.1:${CEILING_PORT} $! $work/tokens.txt")
"$verdict_bin" serve --config "$work/verdict.yaml" >"$work/verdict.log" 2>&1 &
pids+=($!)
targets+=("verdict http://127.0.0.1:${VERDICT_PORT} $! $work/tokens.txt")
if [ "$OPAQUE" = 1 ]; then
    wait_for "the opaque tokens" "" test -s "$work/opaque-tokens.txt"
    targets+=("verdict-opaque http://127.0.0.1:${VERDICT_PORT} $! $work/opaque-tokens.txt")
fi
if [ "$UNCACHED" = 1 ]; then
    "$verdict_bin" serve --config "$work/verdict-uncached.yaml" >"$work/verdict-uncached.log" 2>&1 &
    pids+=($!)
    targets+=("verdict-uncached http://127.0.0.1:${UNCACHED_PORT} $! $work/tokens.txt")
fi
for target in "${targets[@]}"; do
    read -r name url pid _ <<<"$target"
    wait_for "${name} /readyz" "$pid" curl -fsS "${url}/readyz"
done

# One decide request with each target's first token: every target must answer 200, Verdict an allow.
for target in "${targets[@]}"; do
    read -r name url _ tokens <<<"$target"
    first_token="$(head -n 1 "$tokens")"
    sample_body="{\"authorization\":\"Bearer ${first_token}\",\"method\":\"GET\",\"path\":\"/orders/42\"}"
    answer="$(curl -fsS -H 'content-type: application/json' \
        -H 'x-verdict-key: bench-caller-key-0123456789' --data "$sample_body" "$url/v1/decide")"
    if ! grep -q '"allow":true' <<<"$answer"; then
        echo "${name} did not allow the sample request: ${answer}" >&2
        exit 1
    fi
    echo "${name}: ${#answer}-byte allow body" >&2
done

cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo
echo "wrk: ${THREADS} threads, ${CONNECTIONS} connections, ${WARMUP} warm-up then ${DURATION} measured," \
    "${TOKENS} rotating RS256 tokens; $(nproc) cores (${cpu}), load generator on the same cores"
echo
echo "| round | target | requests/s | p50 | p99 | max | bytes/response | errors |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"

declare -A rps
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" "$2"; }
ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }
load() {
    local round="$1" name="$2" url="$3" tokens="$4" out="$work/wrk-$2-$1.txt"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s bench/decide.lua "$url" \
        -- "$tokens" >/dev/null
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s bench/decide.lua "$url" \
        -- "$tokens" >"$out"
    local requests bytes errors
    requests="$(field requests "$out")"
    bytes="$(field bytes "$out")"
    errors=$(($(field status_errors "$out") + $(field socket_errors "$out")))
    rps["$round,$name"]="$(field rps "$out")"
    printf '| %s | %s | %.0f | %s | %s | %s | %d | %d |\n' "$round" "$name" "${rps[$round,$name]}" \
        "$(ms "$(field p50_us "$out")")" "$(ms "$(field p99_us "$out")")" \
        "$(ms "$(field max_us "$out")")" $((bytes / (requests > 0 ? requests : 1))) "$errors"
}

for round in $(seq 1 "$ROUNDS"); do
    for target in "${targets[@]}"; do
        read -r name url _ tokens <<<"$target"
        load "$round" "$name" "$url" "$tokens"
    done
done

echo
reached=1
for round in $(seq 1 "$ROUNDS"); do
    ratio="$(awk -v v="${rps[$round,verdict]}" -v c="${rps[$round,ceiling]}" 'BEGIN { printf "%.3f", v / c }')"
    if awk -v r="$ratio" -v g="$GOAL" 'BEGIN { exit !(r >= g) }'; then
        verdict_word="reached"
    else
        verdict_word="NOT reached"
        reached=0
    fi
    echo "round ${round}: verdict/ceiling throughput = ${ratio} (goal >= ${GOAL}: ${verdict_word})"
    for other in verdict-opaque verdict-uncached; do
        [ -n "${rps[$round,$other]:-}" ] || continue
        awk -v r="$round" -v n="$other" -v v="${rps[$round,$other]}" -v c="${rps[$round,ceiling]}" \
            'BEGIN { printf "round %s: %s/ceiling throughput = %.3f\n", r, n, v / c }'
    done
done
[ "$reached" = 1 ] && echo "warm-path goal reached in every round" || echo "warm-path goal not reached"
