"""Embed a Parquet dataset into Parquet with kroute on Ray Data, N actors, CPU or GPU.

    python examples/ray_embed_parquet.py INPUT OUTPUT [--actors 4] [--device cuda] \
        [--model sentence-transformers/all-MiniLM-L6-v2] [--column query] [--batch-size 1024]

INPUT and OUTPUT are any paths Ray reads and writes (local directories, s3://, gs://, ...).
On one machine this starts a local Ray; on a cluster, run it on the head node (or set
RAY_ADDRESS) and the actors spread over the workers, each loading the model once. With
--device cuda each actor takes one GPU.
"""

import argparse
import time

import ray

import kroute.ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="Parquet file or directory (any path Ray reads)")
    parser.add_argument("output", help="output directory for the Parquet files")
    parser.add_argument("--model", default=None, help="embedding model [default: all-MiniLM-L6-v2]")
    parser.add_argument("--column", default="query", help="text column [default: query]")
    parser.add_argument("--output-column", default="embedding", help="vector column [default: embedding]")
    parser.add_argument("--actors", type=int, default=2, help="embedding actors [default: 2]")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or metal [default: cpu]")
    parser.add_argument("--batch-size", type=int, default=1024, help="rows per batch [default: 1024]")
    parser.add_argument(
        "--cpus-per-actor",
        type=float,
        default=None,
        help="CPUs Ray reserves per CPU actor [default: an equal share of the CPUs less one, "
        "which reading and writing keep]",
    )
    args = parser.parse_args()

    ray.init()
    start = time.perf_counter()
    ds = ray.data.read_parquet(args.input)
    ds = kroute.ray.embed(
        ds,
        args.column,
        actors=args.actors,
        model=args.model,
        output_column=args.output_column,
        device=args.device,
        batch_size=args.batch_size,
        cpus_per_actor=args.cpus_per_actor,
    )
    ds.write_parquet(args.output)
    rows = ray.data.read_parquet(args.output).count()
    seconds = time.perf_counter() - start
    print(f"{rows} rows embedded into {args.output} in {seconds:.1f} s ({rows / seconds:.0f} rows/s)")


if __name__ == "__main__":
    main()
