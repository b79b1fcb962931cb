"""Draws the library's module graph (docs/architecture.svg) from the source: an edge a → b
where a file of module a uses `crate::b`, the same relation tests/layering.rs checks for loops.

    python3 scripts/module_graph.py          # needs graphviz's `dot`
"""

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
# What each layer is for, drawn as the node's second line.
ROLES = {
    "error": "typed errors",
    "kernels": "fused CPU/CUDA ops",
    "device": "--device, --dtype",
    "model": "registry, files, pooling",
    "io": "readers, atomic writers",
    "embed": "encoders, Embedder",
    "cluster": "k-means on the device",
    "records": "routing records",
    "router": "statistics, scoring, learning",
    "eval": "α sweeps, reports",
    "job": "batch embedding",
    "bench": "kroute bench",
    "state": "outcome log, snapshots",
    "engine": "batcher, model thread",
    "serve": "HTTP (axum)",
    "settings": "shared flag groups",
}


def edges() -> set:
    found = set()
    for path in SRC.rglob("*.rs"):
        parts = path.relative_to(SRC).parts
        own = parts[0].removesuffix(".rs")
        if own in ("lib", "main", "cli"):
            continue
        code = path.read_text().split("#[cfg(test)]\nmod tests")[0]
        used = set(re.findall(r"crate::([a-z_]+)", code))
        for group in re.findall(r"use crate::\{([^}]*)\}", code):
            used |= set(re.findall(r"(?:^|,)\s*([a-z_]+)", group))
        found |= {(own, u) for u in used if u != own and u in ROLES and u != "error"}
    return found


def dot_source() -> str:
    lines = ["digraph kroute {", '  rankdir=BT; node [shape=box, style=rounded, fontname="Helvetica", fontsize=11];',
             '  edge [color="#888888", arrowsize=0.6];',
             '  cli [label="cli (the kroute binary)", style="rounded,bold"];',
             '  python [label="python/ (PyO3 bindings)", style="rounded,bold"];']
    for module, role in ROLES.items():
        if module != "error":
            lines.append(f'  {module} [label="{module}\\n{role}"];')
    for a, b in sorted(edges()):
        lines.append(f"  {a} -> {b};")
    for top in ("serve", "engine", "eval", "job", "bench", "settings", "state"):
        lines.append(f"  cli -> {top};")
    for used in ("settings", "router", "embed", "eval", "state"):
        lines.append(f"  python -> {used};")
    lines.append("}")
    return "\n".join(lines)


def main() -> None:
    svg = subprocess.run(["dot", "-Tsvg"], input=dot_source(), capture_output=True, text=True,
                         check=True).stdout
    (ROOT / "docs/architecture.svg").write_text(svg)


if __name__ == "__main__":
    main()
