"""Batch embedding at scale: Parquet vs JSONL input throughput, peak memory from Parquet, and
what checkpointing costs, all with `kroute embed` on the same texts in one run.

N texts (the bundled RouterBench queries repeated, each made unique) are written as JSONL and as
Parquet (row groups of 65,536, snappy); each is embedded to `.npy` under GNU time. Reported per
input: wall seconds, sentences/s of the embedding loop, peak RSS, and `checkpoint_seconds`
(writing the chunks to OUT.partial/ and assembling the output from them) as a share of the run.

    /tmp/bench-venv/bin/pip install pyarrow
    cargo build --release
    /tmp/bench-venv/bin/python benches/compare_inputs.py --texts 3178               # full queries
    /tmp/bench-venv/bin/python benches/compare_inputs.py --texts 1000000 --model tests/fixtures/tiny/bert
    /tmp/bench-venv/bin/python benches/compare_inputs.py --texts 100000 -- --max-seq-length 8
Arguments after `--` go to `kroute embed`.
"""

import argparse
import gzip
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parent.parent
KROUTE = ROOT / "target" / "release" / "kroute"


def texts(n: int) -> list[str]:
    with gzip.open(ROOT / "data" / "routerbench-3k.jsonl.gz", "rt") as f:
        queries = [json.loads(line)["query"] for line in f]
    if n <= len(queries):
        return queries[:n]
    return [f"{queries[i % len(queries)]} #{i}" for i in range(n)]


def run(input_path: pathlib.Path, out: pathlib.Path, extra: list[str]) -> dict:
    summary = out.with_suffix(".json")
    command = ["/usr/bin/time", "-v", str(KROUTE), "embed", str(input_path), "--field", "query",
               "-o", str(out), "--summary", str(summary), "--quiet", *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", done.stderr)
    parts = [float(p) for p in wall.group(1).split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    s = json.loads(summary.read_text())
    return {"wall_seconds": seconds, "peak_rss_mib": rss_kb / 1024, **s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=3178)
    parser.add_argument("--model", help="--model for kroute embed [default: its default]")
    parser.add_argument("--json", type=pathlib.Path, help="write the numbers here")
    parser.add_argument("extra", nargs="*", help="more kroute embed flags (after --)")
    args = parser.parse_args()
    extra = list(args.extra) + (["--model", args.model] if args.model else [])

    corpus = texts(args.texts)
    results = {}
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as tmp:
        tmp = pathlib.Path(tmp)
        jsonl = tmp / "in.jsonl"
        with jsonl.open("w") as f:
            for t in corpus:
                f.write(json.dumps({"query": t}) + "\n")
        parquet = tmp / "in.parquet"
        pq.write_table(pa.table({"query": corpus}), parquet, row_group_size=65_536,
                       compression="snappy")
        for name, path in [("jsonl", jsonl), ("parquet", parquet)]:
            results[name] = run(path, tmp / f"out-{name}.npy", extra)
            print(f"{name}: {results[name]['sentences_per_s']:.1f} sentences/s", file=sys.stderr)
        same = (tmp / "out-jsonl.npy").read_bytes() == (tmp / "out-parquet.npy").read_bytes()
        sizes = {name: p.stat().st_size for name, p in [("jsonl", jsonl), ("parquet", parquet)]}

    print(f"{args.texts:,} texts; kroute embed flags: {' '.join(extra) or '(defaults)'}; "
          f"identical outputs: {same}\n")
    print("| input | input MB | wall s | sentences/s | tokens | peak RSS MiB "
          "| checkpoint s | checkpoint share |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        share = r["checkpoint_seconds"] / r["wall_seconds"]
        print(f"| {name} | {sizes[name] / 1e6:.1f} | {r['wall_seconds']:.1f} "
              f"| {r['sentences_per_s']:.1f} | {r['tokens']:,} | {r['peak_rss_mib']:.0f} "
              f"| {r['checkpoint_seconds']:.2f} | {share:.2%} |")
    ratio = results["parquet"]["sentences_per_s"] / results["jsonl"]["sentences_per_s"]
    print(f"\nParquet / JSONL embedding throughput: {ratio:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"texts": args.texts, "flags": extra, "identical": same,
                                         "results": results}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
