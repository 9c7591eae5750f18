#!/usr/bin/env bash
# bench/soak.sh: soak test of a real `verdict serve` on loopback (bench/soak.rs does the work).
#
# Holds Verdict at a fixed rate of `POST /v1/decide` callouts over kept-alive HTTP/1.1 connections,
# with valid, invalid (bad signature, expired, wrong audience) and unknown-`kid` tokens, while the
# issuer's JWKS endpoint flaps (503, up, hanging, up) and the policies are reloaded by SIGHUP. Reports
# wrong decisions, errors, requests behind schedule, p50/p99/max latency and Verdict's resident memory;
# exits non-zero on a wrong decision or memory growth past the tolerance. See BENCHMARKS.md.
#
# Knobs (environment): RATE (callouts/s) DURATION WARMUP CONNECTIONS TIMEOUT FLAP_EVERY RELOAD_EVERY
# (0s: off) WORKLOAD (repeat or unique: see bench/soak.rs)
# SAMPLE_EVERY RSS_TOLERANCE_MIB JWKS_REFRESH, UNKNOWN_KID_COOLDOWN and JWKS_TIMEOUT (Verdict's defaults
# when unset), DECISION_LOG (off, stdout or a path; the key is left out of the configuration when
# unset, for binaries that do not know it), WORK_DIR, CARGO_TARGET_DIR, and VERDICT_BIN (a verdict
# binary to run instead of the one this checkout builds). Durations are written
# `180s`, `3m`. Arguments are passed on to bench/soak.rs (`--valid-percent 100 --bad-signature-percent 0
# ...` for valid tokens only; `--help` lists them).

set -euo pipefail

RATE="${RATE:-300}"
DURATION="${DURATION:-180s}"
WARMUP="${WARMUP:-20s}"
CONNECTIONS="${CONNECTIONS:-32}"
TIMEOUT="${TIMEOUT:-3s}"
FLAP_EVERY="${FLAP_EVERY:-10s}"
RELOAD_EVERY="${RELOAD_EVERY:-15s}"
SAMPLE_EVERY="${SAMPLE_EVERY:-10s}"
RSS_TOLERANCE_MIB="${RSS_TOLERANCE_MIB:-8}"
WORKLOAD="${WORKLOAD:-repeat}"
JWKS_REFRESH="${JWKS_REFRESH:-5s}"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

echo "building (release) verdict and the soak example into ${TARGET_DIR}" >&2
cargo build --release --locked --bin verdict --example soak

optional=()
if [ -n "${UNKNOWN_KID_COOLDOWN:-}" ]; then optional+=(--unknown-kid-cooldown "$UNKNOWN_KID_COOLDOWN"); fi
if [ -n "${JWKS_TIMEOUT:-}" ]; then optional+=(--jwks-timeout "$JWKS_TIMEOUT"); fi
if [ -n "${DECISION_LOG:-}" ]; then optional+=(--decision-log "$DECISION_LOG"); fi
if [ -n "${WORK_DIR:-}" ]; then optional+=(--work-dir "$WORK_DIR"); fi

exec "${TARGET_DIR}/release/examples/soak" \
    --verdict-bin "${VERDICT_BIN:-${TARGET_DIR}/release/verdict}" \
    --rate "$RATE" --duration "$DURATION" --warmup "$WARMUP" \
    --connections "$CONNECTIONS" --timeout "$TIMEOUT" \
    --flap-every "$FLAP_EVERY" --reload-every "$RELOAD_EVERY" --sample-every "$SAMPLE_EVERY" \
    --rss-tolerance-mib "$RSS_TOLERANCE_MIB" --jwks-refresh "$JWKS_REFRESH" --workload "$WORKLOAD" \
    "${optional[@]}" "$@"
