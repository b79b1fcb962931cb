#!/usr/bin/env bash
# Every GPU measurement in one device call (docs/BENCHMARKS.md "GPU"), prepared here, run there.
#
#   bash scripts/gpu_session.sh pack     # here: CUDA binaries (stripped, gzipped) and the
#                                        # default model in f16 into gpu/ (gitignored, < 64 MiB)
#   device tool: command "bash scripts/gpu_session.sh run", carry ["gpu"]
#
# `run` (on the GPU machine: no Rust, no network) holds every CUDA kernel to its CPU reference
# (tests/kernels.rs, k-means inertia and routing decisions GPU vs CPU included), compares f16
# GPU embeddings of the bundled queries with f32 CPU ones (cosine), runs `kroute bench --device
# cuda` (also with --generic-ops, to see what the fused kernels gain) and sentence-transformers
# fp16 on the same texts and weights; checks the tiny BERT, XLM-RoBERTa and MPNet checkpoints'
# CUDA vectors against CPU ones and benches all-mpnet-base-v2's shape with random weights beside
# transformers' MPNetModel fp16 (real MPNet weights are too large to carry); benches
# Qwen3-Embedding-0.6B's and -8B's shapes in bf16 with random weights beside transformers'
# Qwen3Model (what sentence-transformers runs) in bf16 on the same GPU; loads a random 8B
# checkpoint from safetensors shards while sampling host memory (benches/load_memory.py); writes
# it all to $OUT. On the GPU machine's own CPU (16 cores, often AVX-512 VNNI): the int8 kernel
# tests and `kroute embed` in f32 and int8 on the bundled queries, with the CPU's flags, and the
# error `--dtype int8 --device cuda` gives. A router that learns: `kroute update` on the GPU (the
# vote table rebuilt from learned cells and uploaded) against the CPU on the same outcomes, and
# the routing decisions of both learned routers on the bundled queries.
set -euo pipefail
cd "$(dirname "$0")/.."

pack() {
  # shellcheck disable=SC1091
  source "$HOME/.cache/cuda13/13.0/env.sh"
  export CUDA_PATH="$CUDA_HOME" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda}"
  rm -rf gpu && mkdir -p gpu/model
  cargo build --release --features cuda --bin kroute
  local test_binary bins="$CARGO_TARGET_DIR/release/kroute:kroute"
  for test in kernels int8; do
    test_binary=$(cargo test --release --features cuda --test "$test" --no-run --message-format=json |
      python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')
    bins="$bins $test_binary:$test-tests"
  done
  for bin in $bins; do
    strip -o "gpu/${bin#*:}" "${bin%%:*}" && gzip -9 "gpu/${bin#*:}"
  done
  local model
  model=$(cargo run --release --quiet -- models fetch | sed -n 's/.*verified): //p')
  cp -rL "$model"/. gpu/model/  # the cache holds symlinks into its blob store
  model=$(cargo run --release --quiet -- models fetch sentence-transformers/all-mpnet-base-v2 |
    sed -n 's/.*verified): //p')
  cp -L "$model/config.json" gpu/mpnet-config.json
  "${KROUTE_PYTHON:-python3}" - gpu/model/model.safetensors <<'PY'
import sys
from safetensors.numpy import load_file, save_file
tensors = load_file(sys.argv[1])
save_file({k: v.astype("float16") if v.dtype.kind == "f" else v for k, v in tensors.items()}, sys.argv[1])
PY
  # A router for the learning check, recording gpu/model (the f16 copy) as its embedder.
  cargo run --release --quiet -- train data/routerbench-3k.jsonl.gz -o gpu/router \
    --model gpu/model --quiet
  du -sh gpu
}

run() {
  local lib=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib
  export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" HF_HUB_OFFLINE=1
  local py=/opt/torch/.venv/bin/python bin=/tmp/kroute-gpu
  mkdir -p "$bin"
  for f in kroute kernels-tests int8-tests; do
    gunzip -c "gpu/$f.gz" > "$bin/$f" && chmod +x "$bin/$f"
  done
  nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
  "$bin/kernels-tests" --test-threads 1 2>&1 | tee "$OUT/kernel-tests.txt" || true
  grep -o 'avx512[a-z_]*\|avx_vnni\|amx[a-z_]*' /proc/cpuinfo | sort -u > "$OUT/cpu-flags.txt" || true
  lscpu > "$OUT/lscpu.txt" 2>&1 || true
  "$bin/int8-tests" --nocapture 2>&1 | tee "$OUT/int8-tests.txt" || true

  local data=data/routerbench-3k.jsonl.gz
  "$bin/kroute" embed "$data" -o "$OUT/gpu-f16.npy" --model gpu/model --device cuda --quiet \
    --summary "$OUT/embed-gpu.json" || true
  "$bin/kroute" embed "$data" -o "$OUT/cpu-f32.npy" --model gpu/model --device cpu --quiet \
    --summary "$OUT/embed-cpu.json" || true
  "$bin/kroute" bench --device cuda --model gpu/model --peak-tflops 989 --json \
    > "$OUT/bench-cuda.json" 2> "$OUT/bench-cuda.log" || true
  "$bin/kroute" bench --device cuda --model gpu/model --dtype bf16 --peak-tflops 989 --quick \
    --json > "$OUT/bench-cuda-bf16.json" 2>&1 || true
  "$bin/kroute" bench --device cuda --model gpu/model --quick --generic-ops --json \
    > "$OUT/bench-cuda-generic-ops.json" 2>&1 || true

  # Every architecture on CUDA (f32, so differences are the kernels', not rounding) vs CPU.
  { zcat "$data" | head -n 500 > /tmp/sample.jsonl; } || true
  # The host CPU: f32 (gemm's AVX-512 kernels where the CPU has them) against int8, same run.
  for dtype in f32 int8 f32 int8; do
    "$bin/kroute" embed /tmp/sample.jsonl -o "/tmp/cpu-$dtype.npy" --model gpu/model --quiet \
      --device cpu --dtype "$dtype" --summary "$OUT/embed-cpu-$dtype.json" || true
    cat "$OUT/embed-cpu-$dtype.json" >> "$OUT/embed-cpu-runs.jsonl" || true
  done
  # The AMX kernel against the AVX-512 VNNI one where the host has both (a kernel the CPU lacks
  # would run emulated, slowly, so each is timed only where it is native).
  for kernel_flag in "amx amx_int8" "avx512-vnni avx512_vnni"; do
    read -r kernel flag <<< "$kernel_flag"
    grep -qw "$flag" /proc/cpuinfo || continue
    KROUTE_INT8_KERNEL=$kernel "$bin/kroute" embed /tmp/sample.jsonl -o /tmp/cpu-kernel.npy \
      --model gpu/model --quiet --device cpu --dtype int8 \
      --summary "$OUT/embed-cpu-int8-$kernel.json" || true
  done
  "$bin/kroute" embed /tmp/sample.jsonl -o /tmp/never.npy --model gpu/model --device cuda \
    --dtype int8 > "$OUT/int8-on-cuda.txt" 2>&1 || true
  for arch in bert xlm-roberta mpnet qwen3; do
    for device in cuda cpu; do
      "$bin/kroute" embed /tmp/sample.jsonl -o "$OUT/tiny-$arch-$device.npy" --quiet \
        --model "tests/fixtures/tiny/$arch" --device "$device" --dtype f32 || true
    done
  done
  "$bin/kroute" bench --device cuda --random-weights gpu/mpnet-config.json --dtype f16 \
    --peak-tflops 989 --quick --json > "$OUT/bench-cuda-mpnet-f16.json" 2>&1 || true
  for shape in qwen3-embedding-0.6b qwen3-embedding-8b; do
    "$bin/kroute" bench --device cuda --random-weights "benches/configs/$shape.json" --dtype bf16 \
      --seq-lens 32,128,512 --batch-tokens 16384 --kmeans-points 1000 --kmeans-clusters 8 \
      --route-queries 1000 --peak-tflops 989 --json > "$OUT/bench-cuda-$shape-bf16.json" 2>&1 || true
  done

  "$py" - "$data" gpu/model "$OUT" <<'PY' 2>&1 | tee "$OUT/sentence-transformers.txt"
import gzip, json, sys, time
import numpy as np, torch
from sentence_transformers import SentenceTransformer
data, model_dir, out = sys.argv[1:4]
texts = [json.loads(l)["query"] for l in gzip.open(data, "rt")]
try:
    gpu, cpu = np.load(f"{out}/gpu-f16.npy"), np.load(f"{out}/cpu-f32.npy")
    cos = (gpu * cpu).sum(1) / np.linalg.norm(gpu, axis=1) / np.linalg.norm(cpu, axis=1)
    print(f"kroute cuda f16 vs cpu f32: min cos {cos.min():.6f}, mean {cos.mean():.6f}")
except FileNotFoundError as e:
    print("no embeddings to compare:", e)
model = SentenceTransformer(model_dir, device="cuda").half()
# ~32-token sentences, as kroute bench's 32-token case: the corpus' queries cut to 32 tokens.
model.max_seq_length = 32
for batch in (256, 1024):
    model.encode(texts[:batch], batch_size=batch)
    torch.cuda.synchronize()
    reps = max(1, 100_000 // len(texts))
    start = time.perf_counter()
    for _ in range(reps):
        model.encode(texts, batch_size=batch, convert_to_numpy=False)
    torch.cuda.synchronize()
    rate = reps * len(texts) / (time.perf_counter() - start)
    print(f"sentence-transformers fp16 cuda, batch {batch}, max 32 tokens: {rate:,.0f} sentences/s")

for arch in ("bert", "xlm-roberta", "mpnet"):
    try:
        gpu, cpu = np.load(f"{out}/tiny-{arch}-cuda.npy"), np.load(f"{out}/tiny-{arch}-cpu.npy")
        cos = (gpu * cpu).sum(1) / np.linalg.norm(gpu, axis=1) / np.linalg.norm(cpu, axis=1)
        print(f"tiny {arch}: kroute cuda f32 vs cpu f32 over {len(cos)} queries: min cos {cos.min():.6f}")
    except FileNotFoundError as e:
        print(f"tiny {arch}: no embeddings to compare:", e)

# all-mpnet-base-v2's shape, random weights, fp16: transformers' MPNetModel beside kroute bench.
from transformers import MPNetConfig, MPNetModel
mpnet = MPNetModel(MPNetConfig.from_json_file("gpu/mpnet-config.json")).half().cuda().eval()
for seq, rows in ((32, 512), (128, 128)):
    ids = torch.randint(3, 30000, (rows, seq), device="cuda")
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        for _ in range(3):
            mpnet(input_ids=ids, attention_mask=mask)
        torch.cuda.synchronize()
        start, reps = time.perf_counter(), 20
        for _ in range(reps):
            mpnet(input_ids=ids, attention_mask=mask)
        torch.cuda.synchronize()
    rate = reps * rows / (time.perf_counter() - start)
    print(f"transformers MPNetModel fp16 cuda, {seq} tokens × {rows} rows: {rate:,.0f} sentences/s")
del mpnet

# Qwen3-Embedding shapes, random weights, bf16, the batches kroute bench runs (16384 tokens).
from transformers import Qwen3Config, Qwen3Model
for shape in ("qwen3-embedding-0.6b", "qwen3-embedding-8b"):
    config = Qwen3Config(**json.load(open(f"benches/configs/{shape}.json")))
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        qwen = Qwen3Model(config).eval()
    torch.set_default_dtype(torch.float32)
    for seq in (32, 128, 512):
        rows = 16384 // seq
        ids = torch.randint(3, 150000, (rows, seq), device="cuda")
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            for _ in range(2):
                qwen(input_ids=ids, attention_mask=mask)
            torch.cuda.synchronize()
            start, reps = time.perf_counter(), 10
            for _ in range(reps):
                qwen(input_ids=ids, attention_mask=mask)
            torch.cuda.synchronize()
        rate = reps * rows / (time.perf_counter() - start)
        print(f"transformers Qwen3Model bf16 cuda ({shape}), {seq} tokens × {rows} rows: {rate:,.1f} sentences/s")
    del qwen
    torch.cuda.empty_cache()
PY

  # A router that learns: the same outcomes taken in on the GPU and on the CPU, then every
  # bundled query routed by each (decisions should agree up to f16 embedding noise).
  zcat "$data" | head -n 300 > /tmp/outcomes.jsonl
  for device in cuda cpu; do
    "$bin/kroute" update gpu/router --feedback /tmp/outcomes.jsonl -o "/tmp/learned-$device" \
      --model gpu/model --device "$device" --feedback-half-life 20 --quiet \
      --summary "$OUT/update-$device.json" || true
    "$bin/kroute" route "/tmp/learned-$device" --input "$data" --model gpu/model \
      --device "$device" -o "$OUT/learned-decisions-$device.jsonl" --quiet || true
  done
  "$py" - "$OUT" > "$OUT/learned-agreement.txt" 2>&1 <<'PY' || true
import json, sys
picks = {d: [json.loads(l)["model"] for l in open(f"{sys.argv[1]}/learned-decisions-{d}.jsonl")] for d in ("cuda", "cpu")}
same = sum(a == b for a, b in zip(picks["cuda"], picks["cpu"]))
print(f"learned router, GPU vs CPU: {same} of {len(picks['cpu'])} decisions agree")
PY

  # Loading 8B from bf16 safetensors shards: host memory beyond the mapped files.
  "$py" benches/load_memory.py --shape qwen3-embedding-8b --device cuda --kroute "$bin/kroute" \
    --dir /tmp > "$OUT/qwen3-8b-load-memory.md" 2>&1 || true
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  *) echo "usage: $0 pack|run" >&2; exit 2 ;;
esac
