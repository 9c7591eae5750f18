#!/usr/bin/env bash
# Runs each AFL++ fuzz target (token, decide, config) for SECONDS (default 60), one after another,
# installing what it needs first: cargo-afl (which builds AFL++ with the C compiler) from the crate
# registry. Findings land in fuzz/out/TARGET/default/crashes; the script fails if any target crashed.
#
#   fuzz/run.sh 600            # ten minutes a target
#   TARGETS="token" fuzz/run.sh 3600
#
# Building the instrumented targets takes about 20 minutes on 2 cores (BENCHMARKS.md, "Fuzzing"),
# which is why CI runs the proptest properties instead.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
targets="${TARGETS:-token decide config}"
afl_version=0.18.2

if ! cargo afl --version 2>/dev/null | grep -q "$afl_version"; then
    cargo install cargo-afl --version "$afl_version" --locked
fi
cargo afl build --locked --bins

export AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
crashed=0
for target in $targets; do
    seeds="out/$target/seeds"
    rm -rf "out/$target"
    "target/debug/$target" --seeds "$seeds"
    cargo afl fuzz -V "$seconds" -i "$seeds" -o "out/$target" "target/debug/$target" >"out/$target/afl.log" 2>&1 || true
    stats="out/$target/default/fuzzer_stats"
    grep -E '^(execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs|bitmap_cvg) ' "$stats" |
        sed "s/^/$target: /" || true
    if compgen -G "out/$target/default/crashes/id:*" >/dev/null; then
        echo "$target: crashes in fuzz/out/$target/default/crashes (replay: fuzz/target/debug/$target < FILE)"
        crashed=1
    fi
done
exit "$crashed"
