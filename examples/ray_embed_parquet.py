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

from kroute.ray import EmbedBatches


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
        help="CPUs Ray reserves per CPU actor [default: 1, or less on a machine too small to "
        "leave one CPU for reading and writing]",
    )
    args = parser.parse_args()

    ray.init()
    gpu = args.device.startswith("cuda")
    cpus = args.cpus_per_actor
    if cpus is None:
        # Actors holding every CPU would starve the read and write tasks (Ray waits forever).
        total = ray.cluster_resources().get("CPU", 1.0)
        cpus = 1.0 if gpu else min(1.0, max(0.25, (total - 1) / args.actors))
    start = time.perf_counter()
    ds = ray.data.read_parquet(args.input)
    ds = ds.map_batches(
        EmbedBatches,
        fn_constructor_kwargs={
            "model": args.model,
            "column": args.column,
            "output_column": args.output_column,
            "device": args.device,
        },
        compute=ray.data.ActorPoolStrategy(size=args.actors),
        batch_size=args.batch_size,
        num_cpus=cpus,
        num_gpus=1 if gpu else 0,  # a GPU actor takes a whole GPU
        batch_format="pyarrow",
    )
    ds.write_parquet(args.output)
    rows = ray.data.read_parquet(args.output).count()
    seconds = time.perf_counter() - start
    print(f"{rows} rows embedded into {args.output} in {seconds:.1f} s ({rows / seconds:.0f} rows/s)")


if __name__ == "__main__":
    main()
