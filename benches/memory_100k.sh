#!/usr/bin/env bash
# Peak memory of `kroute embed` streaming 100k texts from disk (RouterBench queries repeated).
# Usage: benches/memory_100k.sh [extra kroute embed flags…]
# Peak RSS is reported by GNU time (`apt-get install time` if /usr/bin/time is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/in.jsonl" <<'PY'
import gzip, json, sys
queries = [json.loads(l)["query"] for l in gzip.open("data/routerbench-3k.jsonl.gz", "rt")]
with open(sys.argv[1], "w") as out:
    for i in range(100_000):
        out.write(json.dumps({"query": f"{queries[i % len(queries)]} #{i}"}) + "\n")
PY
wc -l < "$work/in.jsonl"
/usr/bin/time -v ./target/release/kroute embed "$work/in.jsonl" -o "$work/out.npy" \
  --summary "$work/summary.json" --quiet "$@" 2> "$work/time.txt"
cat "$work/summary.json"
grep -E "Maximum resident set size|Elapsed" "$work/time.txt"
ls -l "$work/out.npy" | awk '{print "output bytes:", $5}'
