#!/usr/bin/env bash
# Runs a command as if this CPU lacked its newer vector instructions, so that kroute,
# PyTorch and ONNX Runtime all dispatch to the kernels they run on an older CPU:
#
#   benches/isa/as_cpu.sh avx2 /tmp/bench-venv/bin/python benches/compare_embed.py
#   benches/isa/as_cpu.sh sse ./target/release/kroute embed texts.jsonl -o out.npy
#
# avx2: no AVX-512, AVX-VNNI or AMX (an AVX2-only CPU such as a Zen 2 EPYC); sse: no AVX
# either. The cores are still this box's: port counts and cache sizes differ from the
# real older CPU's. Needs a C compiler and the `cpuid_fault` CPU flag; see
# hide_cpu_features.c.
set -euo pipefail
if [[ $# -lt 2 || ( "$1" != avx2 && "$1" != sse ) ]]; then
    echo "usage: $0 avx2|sse COMMAND [ARG...]" >&2
    exit 2
fi
level="$1"
shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${CARGO_TARGET_DIR:-$here/../../target}/isa"
lib="$out/hide_cpu_features.so"
if [[ ! -f "$lib" || "$here/hide_cpu_features.c" -nt "$lib" ]]; then
    mkdir -p "$out"
    cc -O2 -shared -fPIC -Wall -Wextra -Werror -o "$lib.$$" "$here/hide_cpu_features.c"
    mv "$lib.$$" "$lib"
fi
HIDE_CPU_FEATURES="$level" LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}" exec "$@"
