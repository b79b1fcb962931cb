#!/usr/bin/env bash
# The fixture of tests/routing_quality.rs's no_shrinkage_and_no_bag_is_the_previous_release_exactly:
# what `kroute eval` of the release before shrinkage and bagging (commit 3d3d500) gives on every
# third bundled RouterBench record with the committed MiniLM embeddings.
#
#   git worktree add /tmp/old-kroute 3d3d500 && (cd /tmp/old-kroute && cargo build --release)
#   bash scripts/paper_router_fixture.sh /tmp/old-kroute/target/release/kroute
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: $0 OLD_KROUTE_BINARY}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/subset.jsonl" <<'PY'
import gzip, sys
lines = gzip.open("data/routerbench-3k.jsonl.gz", "rt").read().splitlines()
open(sys.argv[1], "w").write("\n".join(l for i, l in enumerate(lines) if i % 3 == 0) + "\n")
PY
"$old" eval "$work/subset.jsonl" --embeddings tests/fixtures/minilm_subset_f16.safetensors \
  --seeds 42,43 --alphas 0,0.25,0.5,0.75,0.9,1 --clusters 60 --no-plots --quiet -o "$work/report" \
  > /dev/null
python3 - "$work/report/report.json" tests/fixtures/paper_router_metrics.json <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
runs = report["runs"]["runs"]
out = {
    "seeds": [r["seed"] for r in runs],
    "alphas": report["alphas"],
    "router": [[(p["average_accuracy"], p["cost"], p["selection"]) for p in r["router"]] for r in runs],
}
json.dump(out, open(sys.argv[2], "w"))
print(f"{sys.argv[2]}: {len(runs)} seeds × {len(report['alphas'])} α")
PY
