"""The Python package's overhead: `kroute.Embedder.embed` against `kroute embed` (the CLI) on the
same texts, and Ray Data's per-row overhead with `kroute.ray.EmbedBatches` on 2 CPU actors.

    python3 benches/compare_python.py [--limit 1000] [--ray-rows 2000] [--repeats 3]

Both sides are the Rust library on the same machine in the same run: the CLI's own encoder
time (its summary's `seconds`, model loading excluded) against the wall time of
`Embedder.embed` (model already loaded, GIL released inside, numpy array out). Ray's overhead
is the pipeline's wall time (read Parquet, 2 actors, collect) minus one process embedding the
same rows, per row. Prints one JSON object.
"""

import argparse
import gzip
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import kroute

REPO = Path(__file__).resolve().parents[1]


def queries(limit):
    lines = gzip.open(REPO / "data" / "routerbench-3k.jsonl.gz", "rt").read().splitlines()
    return [json.loads(line)["query"].replace("\n", " ") for line in lines[:limit]]


def cli_seconds(texts, tmp):
    path = Path(tmp) / "texts.txt"
    path.write_text("\n".join(texts) + "\n")
    binary = os.environ.get("KROUTE_BIN", str(REPO / "target" / "release" / "kroute"))
    done = subprocess.run(
        [binary, "embed", str(path), "-o", str(Path(tmp) / "out.npy"), "--quiet",
         "--summary", str(Path(tmp) / "summary.json")],
        check=True, capture_output=True, text=True,
    )
    return json.loads((Path(tmp) / "summary.json").read_text())["seconds"], np.load(Path(tmp) / "out.npy")


def ray_overhead(texts, embedder):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from kroute.ray import EmbedBatches

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        table = pa.table({"id": list(range(len(texts))), "query": texts})
        for part in range(4):
            n = len(texts) // 4
            pq.write_table(table.slice(part * n, n), src / f"part-{part}.parquet")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            start = time.perf_counter()
            ds = ray.data.read_parquet(str(src)).repartition(8).map_batches(
                EmbedBatches, compute=ray.data.ActorPoolStrategy(size=2), batch_size=250, num_cpus=0.5, batch_format="numpy")
            rows = sum(len(b["id"]) for b in ds.iter_batches(batch_size=1000, batch_format="numpy"))
            ray_seconds = time.perf_counter() - start
        finally:
            ray.shutdown()
    start = time.perf_counter()
    embedder.embed(texts)
    alone = time.perf_counter() - start
    return {
        "rows": rows,
        "ray_seconds": round(ray_seconds, 2),
        "single_process_seconds": round(alone, 2),
        "ray_rows_per_s": round(rows / ray_seconds, 1),
        "single_process_rows_per_s": round(rows / alone, 1),
        "overhead_ms_per_row": round(1e3 * (ray_seconds - alone) / rows, 3),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--ray-rows", type=int, default=2000, help="0 skips Ray")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    texts = queries(args.limit)
    embedder = kroute.Embedder()
    embedder.embed(texts[:32])  # warm-up
    cli, python = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            seconds, expected = cli_seconds(texts, tmp)
            cli.append(seconds)
            start = time.perf_counter()
            got = embedder.embed(texts)
            python.append(time.perf_counter() - start)
    result = {
        "texts": len(texts),
        "cli_seconds_best": min(cli),
        "python_seconds_best": round(min(python), 3),
        "python_overhead_pct": round(100 * (min(python) / min(cli) - 1), 2),
        "max_abs_diff": float(np.abs(got - expected).max()),
        "threads": os.cpu_count(),
    }
    if args.ray_rows:
        texts = queries(3178)
        texts = (texts * (args.ray_rows // len(texts) + 1))[: args.ray_rows]
        result["ray"] = ray_overhead(texts, embedder)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
