"""Simulates int8 quantization of all-mpnet-base-v2 in PyTorch to choose the down projection's
weight scales: per-row asymmetric u8 activations everywhere, per-channel int8 weights in the
attention and up projection, and per channel or per block of N inputs in the down projection.
Prints the worst cosine to f32 over 300 RouterBench queries plus the parity texts.

    /tmp/bench-venv/bin/python scripts/int8_block_simulation.py \\
        ~/.cache/huggingface/hub/models--sentence-transformers--all-mpnet-base-v2/snapshots/*
"""
import torch, sys, json, gzip
from sentence_transformers import SentenceTransformer
torch.set_num_threads(2)
name = sys.argv[1]  # the model directory
m = SentenceTransformer(name, device="cpu")
texts = [json.loads(l)["query"] for l in gzip.open("data/routerbench-3k.jsonl.gz","rt")][:300]
texts += json.load(open("tests/fixtures/mpnet_parity.json"))["texts"]
ref = m.encode(texts, convert_to_tensor=True, normalize_embeddings=True)

def qact(x, levels=255):
    lo = torch.clamp(x.min(-1, keepdim=True).values, max=0); hi = torch.clamp(x.max(-1, keepdim=True).values, min=0)
    s = (hi-lo)/levels; s[s==0]=1
    z = torch.round(-lo/s)
    q = torch.clamp(torch.round(x/s)+z, 0, levels)
    return (q-z)*s
def qw(w, group):
    out_, in_ = w.shape
    g = in_ if group is None else group
    wg = w.reshape(out_, in_//g, g)
    s = wg.abs().amax(-1, keepdim=True)/127; s[s==0]=1
    return (torch.round(wg/s).clamp(-127,127)*s).reshape(out_, in_)

class Q(torch.nn.Module):
    def __init__(self, lin, group, levels):
        super().__init__(); self.w = qw(lin.weight.data, group); self.b = lin.bias.data; self.levels=levels
    def forward(self, x): return torch.nn.functional.linear(qact(x, self.levels), self.w, self.b)

import copy
for group in [None, 128, 32]:
    mm = copy.deepcopy(m)
    enc = mm[0].auto_model.encoder
    for layer in enc.layer:
        layer.output.dense = Q(layer.output.dense, group, 255)
        at = layer.attention.attn
        for n in ["q","k","v","o"]:
            setattr(at, n, Q(getattr(at, n), None, 255))
        layer.intermediate.dense = Q(layer.intermediate.dense, None, 255)
    e = mm.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    cos = (e*ref).sum(-1)
    print(name, "down-proj int8 group", group, "all int8: min cos %.5f mean %.5f; parity min %.5f" % (cos.min().item(), cos.mean().item(), cos[300:].min().item()), flush=True)
