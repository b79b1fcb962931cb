#!/usr/bin/env bash
# Runs kroute's fuzz targets (fuzz/fuzz_targets/) one after the other with libFuzzer, and prints
# a Markdown table of executions, coverage and findings per target (docs/RELIABILITY.md).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      # SECONDS per target (default 60); all targets
#   FUZZ_RUNS=1000000 scripts/fuzz.sh 3600     # stop each target at 1,000,000 executions
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain (`rustup toolchain
# install nightly`); without nightly, stable is used with RUSTC_BOOTSTRAP=1, which lets it take
# the sanitizer flags. Each target starts from its committed seeds (fuzz/seeds/TARGET) and keeps
# what it finds in fuzz/corpus/TARGET (not committed); a failing input lands in
# fuzz/artifacts/TARGET: add it to fuzz/regressions/TARGET so that `cargo test` replays it.
# Limits: 1 s per input, 2,048 MB of resident memory. Targets run under AddressSanitizer, except
# `tokenizer`: the tokenizers crate is safe Rust, and under ASan its instrumented normaliser
# managed 140 inputs per second, too few to reach a million; it builds into its own target
# directory so that switching sanitizers rebuilds nothing.
set -euo pipefail
seconds="${1:-60}"
shift || true
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here/fuzz"

if ! command -v cargo-fuzz > /dev/null; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 2
fi
if rustup toolchain list 2> /dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || mapfile -t targets < <("${fuzz[@]}" list)
sanitizer_args() {
    case "$1" in
        tokenizer) echo "--sanitizer=none --target-dir=target/no-sanitizer" ;;
        *) echo "--sanitizer=address" ;;
    esac
}

for target in "${targets[@]}"; do
    # shellcheck disable=SC2046 # the arguments are words by design
    "${fuzz[@]}" build -O --debug-assertions $(sanitizer_args "$target") "$target"
done

dict_for() {
    case "$1" in
        serve_config) echo dicts/toml.dict ;;
        records_line | records_file | http_body | wal | model_config) echo dicts/json.dict ;;
    esac
}

mkdir -p logs
status=0
rows=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "seeds/$target"
    args=(-max_total_time="$seconds" -timeout=1 -rss_limit_mb=2048 -print_final_stats=1)
    [[ -n "${FUZZ_RUNS:-}" ]] && args+=(-runs="$FUZZ_RUNS")
    dict="$(dict_for "$target")"
    [[ -n "$dict" ]] && args+=(-dict="$dict")
    log="logs/$target.log"
    echo "== $target (${seconds} s${FUZZ_RUNS:+, at most $FUZZ_RUNS runs})" >&2
    start=$(date +%s)
    # shellcheck disable=SC2046
    if "${fuzz[@]}" run -O --debug-assertions $(sanitizer_args "$target") "$target" \
        "corpus/$target" "seeds/$target" -- \
        "${args[@]}" > "$log" 2>&1; then
        result=ok
    else
        result="FAILED (fuzz/$log, fuzz/artifacts/$target)"
        status=1
    fi
    wall=$(($(date +%s) - start))
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    rss=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(grep -o 'cov: [0-9]*' <<< "$last" | grep -o '[0-9]*' || echo "?")
    ft=$(grep -o 'ft: [0-9]*' <<< "$last" | grep -o '[0-9]*' || echo "?")
    corpus=$(find "corpus/$target" -type f | wc -l)
    rows+=("| $target | $runs | $rate | $wall | $cov | $ft | $corpus | $rss | $result |")
done

echo "| target | executions | per second | wall s | coverage (edges) | features | corpus | peak RSS MB | result |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
printf '%s\n' "${rows[@]}"
exit $status
