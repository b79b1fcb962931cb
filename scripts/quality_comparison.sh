#!/usr/bin/env bash
# docs/EVALUATION.md's comparison of routing estimators: the paper's router, shrinkage, bagging,
# both (kroute's defaults) and the setting `kroute tune` picks, each evaluated by `kroute eval`
# on the bundled RouterBench test split with precomputed embeddings, seeds 42/142/242 (its default).
#
#   kroute embed data/routerbench-3k.jsonl.gz -o minilm.safetensors
#   kroute embed data/routerbench-3k.jsonl.gz -o mpnet.safetensors --model sentence-transformers/all-mpnet-base-v2
#   bash scripts/quality_comparison.sh minilm.safetensors "60 5 8 9 0"   # tuned: clusters bag top-p β M
set -euo pipefail
cd "$(dirname "$0")/.."
embeddings=${1:?usage: $0 EMBEDDINGS.safetensors "CLUSTERS BAG TOP_P BETA M"}
read -r tk tb tp tbeta tm <<< "${2:?the tuned setting}"
kroute=${KROUTE:-target/release/kroute}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() {
  local name=$1; shift
  "$kroute" eval data/routerbench-3k.jsonl.gz --embeddings "$embeddings" --no-plots --quiet \
    -o "$work/$name" "$@" > /dev/null 2>&1
  echo "$name $*" >> "$work/order"
}
run paper --prior-strength 0 --bag 1
run shrinkage --prior-strength 5 --bag 1
run bagging --prior-strength 0 --bag 3
run both --prior-strength 5 --bag 3
run tuned --clusters "$tk" --bag "$tb" --top-p "$tp" --beta "$tbeta" --prior-strength "$tm"
python3 - "$work" <<'PY'
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
alphas = [0.15, 0.5, 0.8, 0.85, 0.9, 0.95, 1.0]
print("| router | " + " | ".join(f"α={a:.2f}" for a in alphas) + " | whole-curve area | gap closed |")
print("|---|" + "---:|" * (len(alphas) + 2))
for line in (work / "order").read_text().splitlines():
    name, *flags = line.split()
    report = json.loads((work / name / "report.json").read_text())
    rows = {round(r["alpha"], 2): r for r in report["rows"] if r["kind"] == "router"}
    cells = [f"{rows[a]['average_accuracy']['mean']:.3f} ± {rows[a]['average_accuracy']['std']:.3f} (${rows[a]['cost']['mean']:.2f})" for a in alphas]
    curve = report["curve"]
    closed = curve["gap_closed"]
    print(f"| {name} (`{' '.join(flags)}`) | " + " | ".join(cells)
          + f" | {curve['router']['mean']:.4f} ± {curve['router']['std']:.4f}"
          + f" | {100 * closed['mean']:.1f} ± {100 * closed['std']:.1f} % |")
single = report["curve"]["singles"]["mean"]
print(f"\nsingle models' frontier area {single:.4f}, oracle {report['curve']['oracle']['mean']:.4f}")
PY
