"""Host memory while kroute loads a large Qwen3 checkpoint from safetensors shards.

Builds a random-weight checkpoint of a Qwen3-Embedding shape (benches/configs/<shape>.json) in
the layout the hub ships (bf16 safetensors shards of at most 5 GB plus
model.safetensors.index.json, the tiny test checkpoint's tokenizer and sentence-transformers
files), runs `kroute embed` on a few texts with it, and samples the process's resident memory
every 50 ms: RssAnon (memory kroute allocated) and RssFile (pages of the memory-mapped weight
files). On a GPU the weights should pass through to the device, so RssAnon stays small; on the
CPU the weights themselves live in RssAnon, so what counts is RssAnon beyond the weights' size.

    /tmp/bench-venv/bin/python benches/load_memory.py --shape qwen3-embedding-4b --device cpu
    python benches/load_memory.py --shape qwen3-embedding-8b --device cuda --kroute BIN  # GPU box
"""

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "fixtures" / "tiny" / "qwen3"


def build_checkpoint(shape: str, target: pathlib.Path) -> int:
    """Writes the checkpoint; returns the weights' bytes."""
    import torch
    import transformers

    config = transformers.Qwen3Config(
        **json.loads((ROOT / "benches" / "configs" / f"{shape}.json").read_text()))
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    model = transformers.Qwen3Model(config).eval()
    model.save_pretrained(target, max_shard_size="5GB")
    del model
    for name in ["tokenizer.json", "tokenizer_config.json", "modules.json",
                 "config_sentence_transformers.json"]:
        shutil.copy(TINY / name, target / name)
    shutil.copytree(TINY / "1_Pooling", target / "1_Pooling")
    return sum(p.stat().st_size for p in target.glob("*.safetensors"))


def status_kb(pid: int, key: str) -> int:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="qwen3-embedding-4b")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--kroute", type=pathlib.Path, default=ROOT / "target/release/kroute")
    parser.add_argument("--dir", type=pathlib.Path, help="where to write the checkpoint")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = pathlib.Path(tmp)
        model_dir = tmp / "model"
        start = time.perf_counter()
        weights = build_checkpoint(args.shape, model_dir)
        print(f"built {args.shape}: {weights / 2**30:.2f} GiB of bf16 shards in "
              f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
        texts = tmp / "texts.txt"
        texts.write_text("Which model should answer this?\nProve that sqrt(2) is irrational.\n")
        command = [str(args.kroute), "embed", str(texts), "-o", str(tmp / "out.npy"), "--quiet",
                   "--model", str(model_dir), "--device", args.device, "--dtype", args.dtype]
        start = time.perf_counter()
        process = subprocess.Popen(command)
        peak_anon = peak_file = 0
        while process.poll() is None:
            peak_anon = max(peak_anon, status_kb(process.pid, "RssAnon"))
            peak_file = max(peak_file, status_kb(process.pid, "RssFile"))
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        if process.returncode != 0:
            raise SystemExit(f"kroute failed: {command}")
    gib = lambda kb: kb / 2**20  # noqa: E731
    weights_gib = weights / 2**30
    print(f"| shape | device, dtype | weights | peak RssAnon | beyond the weights | peak RssFile | seconds |")
    print("|---|---|---:|---:|---:|---:|---:|")
    resident = weights_gib if args.device == "cpu" else 0.0
    print(f"| {args.shape} | {args.device}, {args.dtype} | {weights_gib:.2f} GiB "
          f"| {gib(peak_anon):.2f} GiB | {gib(peak_anon) - resident:.2f} GiB "
          f"| {gib(peak_file):.2f} GiB | {seconds:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
