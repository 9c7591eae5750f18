#!/usr/bin/env bash
# bench/load.sh: load test of `POST /v1/decide` against the HTTP ceiling of this machine, on loopback.
#
# Starts the benchmark issuer (bench/issuer.rs: JWKS, real RS256 tokens, Verdict configs), Verdict
# (three times: with its token cache, with a cache of one token, and with no decision memo), and the
# bare axum ceiling
# (bench/ceiling.rs), all on 127.0.0.1; then runs wrk against each target in turn, a warm-up and a
# measured run each, in one run (bench/decide.lua builds the requests). The Verdict targets are the
# workloads of issue 15, by what repeats:
#   repeat   each token always asks for the same route: a (token, route) pair recurs once per pass
#   unique   each request a random route of ROUTES: (token, route) pairs rarely recur, but the example
#            policies test the path only by prefix, so the memo answers them by token
#   policy   the unique load on the Verdict with no memo: the policies run for every request
#   new      every token new to the cache (the one-token cache): a signature check per request
#   opaque   rotating opaque tokens, answered from the introspection cache after the first of each
# For each: requests/s, p50/p99, server CPU per request (from /proc/<pid>/stat over the measured
# run), the server's resident memory and what its token cache and memo hold after it, and requests/s
# as a share of the ceiling's. Every Verdict answer must be the expected allow, read from Verdict's
# own decision counters: a run with a deny or a non-2xx answer is no measurement,
# and the script fails. Everything it starts is stopped on exit. See BENCHMARKS.md.
#
# Knobs (environment): THREADS CONNECTIONS DURATION WARMUP TOKENS ROUTES ROUNDS TARGETS (a
# space-separated subset of: ceiling repeat unique policy new opaque, and ceiling+N for any whole N: the
# ceiling spending N µs of calibrated user-space CPU on each answer, to show what a service doing N µs
# of its own work per request can reach here), CARGO_TARGET_DIR, VERDICT_BIN (a verdict binary to
# measure instead of the one this checkout builds, to compare two builds in one run), and the ports CEILING_PORT
# VERDICT_PORT UNCACHED_PORT UNMEMOIZED_PORT JWKS_PORT and WORKED_PORT (the first of the ceiling+N targets').

set -euo pipefail

THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-32}"
DURATION="${DURATION:-20s}"
WARMUP="${WARMUP:-5s}"
TOKENS="${TOKENS:-2000}"
ROUTES="${ROUTES:-1000}"
ROUNDS="${ROUNDS:-1}"
TARGETS="${TARGETS:-ceiling repeat unique policy new opaque}"
CEILING_PORT="${CEILING_PORT:-18090}"
VERDICT_PORT="${VERDICT_PORT:-18080}"
UNCACHED_PORT="${UNCACHED_PORT:-18081}"
UNMEMOIZED_PORT="${UNMEMOIZED_PORT:-18082}"
JWKS_PORT="${JWKS_PORT:-18091}"
WORKED_PORT="${WORKED_PORT:-18100}"
# The goals of issue 15, as shares of the ceiling's requests/s (`unique`'s for `policy` too: the
# issue set it for a load on which the policies run).
declare -A GOAL=([repeat]=0.85 [unique]=0.5 [policy]=0.5 [new]=0.3)

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
verdict_bin="${VERDICT_BIN:-${TARGET_DIR}/release/verdict}"
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

# Waits, bounded (5 min: minting 100,000 RS256 tokens takes a while), until a command succeeds; gives
# up early if process `pid` (when given) has exited.
wait_for() {
    local what="$1" pid="$2"
    shift 2
    for _ in $(seq 1 3000); do
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

"$fixture_bin" --jwks-listen "127.0.0.1:${JWKS_PORT}" --count "$TOKENS" \
    --tokens-out "$work/tokens.txt" --opaque-tokens-out "$work/opaque-tokens.txt" \
    --verdict-listen "127.0.0.1:${VERDICT_PORT}" --config-out "$work/verdict.yaml" \
    --uncached-config-out "$work/verdict-uncached.yaml" --uncached-listen "127.0.0.1:${UNCACHED_PORT}" \
    --unmemoized-config-out "$work/verdict-unmemoized.yaml" \
    --unmemoized-listen "127.0.0.1:${UNMEMOIZED_PORT}" \
    >"$work/fixture.log" 2>&1 &
pids+=($!)
wait_for "the bench fixture's files" "$!" test -s "$work/verdict.yaml"
wait_for "the opaque tokens" "" test -s "$work/opaque-tokens.txt"

"$ceiling_bin" "127.0.0.1:${CEILING_PORT}" >"$work/ceiling.log" 2>&1 &
ceiling_pid=$!
pids+=("$ceiling_pid")
"$verdict_bin" serve --config "$work/verdict.yaml" >"$work/verdict.log" 2>&1 &
verdict_pid=$!
pids+=("$verdict_pid")
"$verdict_bin" serve --config "$work/verdict-uncached.yaml" >"$work/verdict-uncached.log" 2>&1 &
uncached_pid=$!
pids+=("$uncached_pid")
"$verdict_bin" serve --config "$work/verdict-unmemoized.yaml" >"$work/verdict-unmemoized.log" 2>&1 &
unmemoized_pid=$!
pids+=("$unmemoized_pid")

# Each target: name, URL, pid, tokens file, workload of bench/decide.lua.
declare -A target
target[ceiling]="http://127.0.0.1:${CEILING_PORT} $ceiling_pid $work/tokens.txt repeat"
target[repeat]="http://127.0.0.1:${VERDICT_PORT} $verdict_pid $work/tokens.txt repeat"
target[unique]="http://127.0.0.1:${VERDICT_PORT} $verdict_pid $work/tokens.txt unique"
target[policy]="http://127.0.0.1:${UNMEMOIZED_PORT} $unmemoized_pid $work/tokens.txt unique"
target[new]="http://127.0.0.1:${UNCACHED_PORT} $uncached_pid $work/tokens.txt repeat"
target[opaque]="http://127.0.0.1:${VERDICT_PORT} $verdict_pid $work/opaque-tokens.txt repeat"
# The ceiling with work of its own, one process for each `ceiling+N` asked for.
worked_port="$WORKED_PORT"
for name in $TARGETS; do
    [[ "$name" =~ ^ceiling\+([0-9]+)$ ]] || continue
    "$ceiling_bin" "127.0.0.1:${worked_port}" "${BASH_REMATCH[1]}" >"$work/${name}.log" 2>&1 &
    pids+=($!)
    target[$name]="http://127.0.0.1:${worked_port} $! $work/tokens.txt repeat"
    worked_port=$((worked_port + 1))
done
for name in $TARGETS; do
    [ -n "${target[$name]:-}" ] || { echo "unknown target ${name}" >&2; exit 2; }
    read -r url pid _ <<<"${target[$name]}"
    wait_for "${name} /readyz" "$pid" curl -fsS "${url}/readyz"
done

# One decide request with each target's first token: every target must answer 200 with an allow.
for name in $TARGETS; do
    read -r url _ tokens _ <<<"${target[$name]}"
    first_token="$(head -n 1 "$tokens")"
    sample_body="{\"authorization\":\"Bearer ${first_token}\",\"method\":\"GET\",\"path\":\"/orders/42\"}"
    answer="$(curl -fsS -H 'content-type: application/json' \
        -H 'x-verdict-key: bench-caller-key-0123456789' --data "$sample_body" "$url/v1/decide")"
    if ! grep -q '"allow":true' <<<"$answer"; then
        echo "${name} did not allow the sample request: ${answer}" >&2
        exit 1
    fi
done

cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
ticks="$(getconf CLK_TCK)"
echo
echo "wrk: ${THREADS} threads, ${CONNECTIONS} connections, ${WARMUP} warm-up then ${DURATION} measured," \
    "${TOKENS} rotating RS256 tokens, ${ROUTES} routes; $(nproc) cores (${cpu}), load generator on the same cores"
echo
echo "| round | target | requests/s | of the ceiling | p50 | p99 | server CPU/request | server RSS | tokens / memo cached | errors |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"

declare -A rps
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" "$2"; }
ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }
# The CPU time (user + system) process `pid` has used, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# What Verdict at `url` holds: "<cached tokens> / <memo entries>" ("-" for the ceiling).
held() {
    curl -fsS "$1/metrics" 2>/dev/null | awk '
        /^verdict_token_cache_entries / { tokens = $NF } /^verdict_decision_memo_entries / { memo = $NF }
        END { if (tokens == "") print "-"; else printf "%d / %d\n", tokens, memo }' || echo "-"
}
# Decisions counted by Verdict at `url`: "<allows> <others>".
decisions() {
    curl -fsS "$1/metrics" | awk '/^verdict_decisions_total\{/ {
        if ($0 ~ /outcome="allow"/) allow += $NF; else other += $NF }
        END { printf "%d %d\n", allow, other }'
}
load() {
    local round="$1" name="$2" out="$work/wrk-$2-$1.txt"
    local url pid tokens workload
    read -r url pid tokens workload <<<"${target[$name]}"
    local script=(-s bench/decide.lua "$url" -- "$tokens" "$workload" "$ROUTES")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "${script[@]}" >/dev/null
    local counted_before=(0 0) counted_after=(0 0)
    local verdict=1 # whether the target is Verdict, whose decisions are counted
    if [[ "$name" == ceiling* ]]; then verdict=0; fi
    [ "$verdict" = 0 ] || read -ra counted_before <<<"$(decisions "$url")"
    local cpu_before
    cpu_before="$(cpu_ticks "$pid")"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "${script[@]}" >"$out"
    local cpu_after
    cpu_after="$(cpu_ticks "$pid")"
    [ "$verdict" = 0 ] || read -ra counted_after <<<"$(decisions "$url")"
    local requests errors
    requests="$(field requests "$out")"
    errors=$(($(field status_errors "$out") + $(field socket_errors "$out")))
    rps["$round,$name"]="$(field rps "$out")"
    if [ "$verdict" = 1 ]; then
        local allows=$((counted_after[0] - counted_before[0])) others=$((counted_after[1] - counted_before[1]))
        if [ "$others" -ne 0 ] || [ "$allows" -lt "$requests" ]; then
            echo "${name}: ${others} answers were not allows (${allows} allows for ${requests} requests): no measurement" >&2
            exit 1
        fi
    fi
    if [ "$errors" -ne 0 ]; then
        echo "${name}: ${errors} errors or non-2xx answers: no measurement" >&2
        exit 1
    fi
    local ratio="-"
    [ -n "${rps[$round,ceiling]:-}" ] && ratio="$(awk -v v="${rps[$round,$name]}" \
        -v c="${rps[$round,ceiling]}" 'BEGIN { printf "%.3f", v / c }')"
    ratios["$round,$name"]="$ratio"
    local rss held_now="-"
    rss="$(awk '/^VmRSS:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$pid/status")"
    [ "$verdict" = 0 ] || held_now="$(held "$url")"
    printf '| %s | %s | %.0f | %s | %s | %s | %.1f µs | %s | %s | %d |\n' "$round" "$name" "${rps[$round,$name]}" \
        "$ratio" "$(ms "$(field p50_us "$out")")" "$(ms "$(field p99_us "$out")")" \
        "$(awk -v t="$((cpu_after - cpu_before))" -v hz="$ticks" -v n="$requests" \
            'BEGIN { printf "%.1f", t / hz * 1e6 / (n > 0 ? n : 1) }')" "$rss" "$held_now" "$errors"
}

declare -A ratios
for round in $(seq 1 "$ROUNDS"); do
    for name in $TARGETS; do
        load "$round" "$name"
    done
done

echo
for round in $(seq 1 "$ROUNDS"); do
    for name in repeat unique policy new; do
        ratio="${ratios[$round,$name]:-}"
        [ -n "$ratio" ] && [ "$ratio" != "-" ] || continue
        if awk -v r="$ratio" -v g="${GOAL[$name]}" 'BEGIN { exit !(r >= g) }'; then
            word="reached"
        else
            word="NOT reached"
        fi
        echo "round ${round}: ${name}/ceiling = ${ratio} (goal >= ${GOAL[$name]}: ${word})"
    done
done
