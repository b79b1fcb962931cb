"""Routing settings on a validation set carved from the training split (never the test split).

    cargo build --release
    target/release/kroute embed data/routerbench-3k.jsonl.gz -o /tmp/routerbench-emb.safetensors
    python3 scripts/tune_on_validation.py /tmp/routerbench-emb.safetensors [--data data/routerbench-3k.jsonl.gz]

For every combination of --clusters, --top-p and --beta below, runs
`kroute eval --on-validation --embeddings …` (3 seeds, 20 % of each dataset's training rows held
out) and prints, from each report's headlines: the best single model's validation accuracy, the
router's best accuracy and its gain, and the cheapest α matching the best single model with its
cost saving. Standard library only; the results table is what docs/EVALUATION.md quotes.
"""

import argparse
import itertools
import json
import pathlib
import subprocess
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLUSTERS = [10, 20, 30, 60, 100]
TOP_P = [1, 2, 4, 8]
BETA = [3.0, 9.0, 30.0]


def run(embeddings: str, data: str, clusters: int, top_p: int, beta: float, out: pathlib.Path) -> dict:
    subprocess.run(
        [str(ROOT / "target/release/kroute"), "eval", data, "--embeddings", embeddings,
         "--on-validation", "--no-plots", "--quiet", "-o", str(out),
         "--clusters", str(clusters), "--top-p", str(top_p), "--beta", str(beta)],
        check=True, capture_output=True)
    return json.loads((out / "report.json").read_text())["headlines"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("embeddings")
    parser.add_argument("--data", default=str(ROOT / "data/routerbench-3k.jsonl.gz"))
    args = parser.parse_args()
    print("| clusters | top-p | β | best single | router best (α) | gain (pts) | matches best single at |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for clusters, top_p, beta in itertools.product(CLUSTERS, TOP_P, BETA):
            h = run(args.embeddings, args.data, clusters, top_p, beta, pathlib.Path(tmp) / "r")
            best = h["best_router"]
            match = h["matches_best_single"]
            matched = f"α={match['alpha']:.2f}, {-100 * match['cost_saving']:+.0f} % cost" if match else "never"
            print(f"| {clusters} | {top_p} | {beta:g} | {h['best_single_accuracy']:.3f} | "
                  f"{best['accuracy']:.3f} ({best['alpha']:.2f}) | {h['accuracy_gain_points']:+.1f} | {matched} |",
                  flush=True)


if __name__ == "__main__":
    main()
