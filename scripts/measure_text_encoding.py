"""First-time text encoding on the CPU: the shared-prefix path vs batches cut to their
longest prompt, on open_clip's ViT-B/16 text tower (random init; speed does not depend
on the weights), ADE-150 synonyms x the 80 ImageNet templates, fp32.

    .venv/bin/python scripts/measure_text_encoding.py [--threads 2] [--subset 24]
        [--batch-sizes 256,512,1024] [--full]

Prints prompts/s, tokens/s, the achieved GFLOP/s of the tower (2 x non-embedding
parameters x tokens run), the fp32 matmul ceiling of the same threads, and the largest
difference to full-length ``encode_text`` (L2-normalised rows).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ovseg_ros.core.class_names import load_class_file  # noqa: E402
from ovseg_ros.core.templates import imagenet80_templates, make_prompts  # noqa: E402
from ovseg_ros.core.text_cache import OpenClipTextEncoder, TextEmbedder  # noqa: E402
from ovseg_ros.core.vocabulary import split_synonyms  # noqa: E402


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def tokens_run(enc, prompts, templates, mode, batch):
    """Tokens the tower runs (per row, without padding) for one embedder's batches."""
    n_t = len(templates)
    if mode == "truncated":        # old: all prompts by length, each batch cut to its longest
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        groups = [order[i:i + batch] for i in range(0, len(order), batch)]
    else:
        order = sorted(range(len(prompts)), key=lambda i: (i % n_t, len(prompts[i])))
        groups = [order[i:i + batch] for i in range(0, len(order), batch)]
    total = 0
    for g in groups:
        tok = enc.tokenizer([prompts[j] for j in g])
        n = enc._pool_index(tok) + 1
        if mode == "truncated":
            total += int(n.max()) * len(g)       # padded to the longest
        else:
            for members, p in enc._prefix_groups(tok, n):
                total += int((n[members] - p).sum()) + p
    return total


def run(enc, mode, synonyms, templates, batch):
    enc.exact()
    enc.mode = mode
    emb = TextEmbedder(enc, "bench", "imagenet80", templates, batch_size=batch)
    if mode == "truncated":        # the old batching: all templates, by length
        def old_encode(syns, self=emb):
            prompts = [p for s in syns for p in make_prompts(s, self.templates)]
            order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
            rows = [None] * len(prompts)
            for i in range(0, len(prompts), self.batch_size):
                idx = order[i:i + self.batch_size]
                for j, r in zip(idx, enc([prompts[j] for j in idx])):
                    rows[j] = r
            pp = torch.stack(rows).reshape(len(syns), len(self.templates), -1)
            return F.normalize(F.normalize(pp, dim=-1).mean(1), dim=-1)
        t0 = time.perf_counter()
        out = old_encode(synonyms)
    else:
        t0 = time.perf_counter()
        out = torch.stack([torch.from_numpy(a) for a in emb._encode(synonyms)])
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--subset", type=int, default=24)
    ap.add_argument("--batch-sizes", default="256,512,1024")
    ap.add_argument("--full", action="store_true", help="also all of ADE-150, new path")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    tok = open_clip.get_tokenizer("ViT-B-16")
    enc = OpenClipTextEncoder(model, tok, "cpu")
    enc.exact()
    print(f"mode after checks: {enc.mode} {enc.fallback_reason!r}")
    params = sum(p.numel() for p in model.transformer.parameters())
    params += model.text_projection.numel() if model.text_projection is not None else 0
    syn = [s for e in load_class_file("ade150").names for s in split_synonyms(e)]
    templates = imagenet80_templates()
    print(f"load: {os.getloadavg()}  threads {torch.get_num_threads()}  "
          f"ADE-150 synonyms {len(syn)}  templates {len(templates)}  "
          f"non-embedding params {params / 1e6:.1f} M")
    print(f"fp32 matmul 2048^3: {matmul_gflops():.1f} GFLOP/s")
    step = max(1, len(syn) // args.subset)
    sub = syn[::step][:args.subset]
    prompts = [p for s in sub for p in make_prompts(s, templates)]
    # full-length reference (77 tokens a prompt: slow) for the first n_ref synonyms
    n_ref = 2
    with torch.inference_mode():
        t = tok([p for s in sub[:n_ref] for p in make_prompts(s, templates)])
        ref = F.normalize(model.encode_text(t).float(), dim=-1)
        ref = F.normalize(ref.reshape(n_ref, len(templates), -1).mean(1), dim=-1)
    old_out = None
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        for mode in ("truncated", "shared_prefix"):
            secs, out = run(enc, mode, sub, templates, batch)
            ntok = tokens_run(enc, prompts, templates, mode, batch)
            old_out = out if mode == "truncated" else old_out
            vs_old = float((out - old_out).abs().max())
            print(f"{len(sub)} syn x {len(templates)} = {len(prompts)} prompts  batch {batch:5d} "
                  f"{mode:14s} {secs:6.2f} s  {len(prompts) / secs:7.0f} prompts/s  "
                  f"{ntok / secs:8.0f} tokens/s ({ntok} tokens)  "
                  f"{2 * params * ntok / secs / 1e9:6.1f} GFLOP/s  "
                  f"max|diff| full {float((out[:n_ref] - ref).abs().max()):.1e} "
                  f"old {vs_old:.1e}  load {os.getloadavg()[0]:.2f}")
    for n in (1, 4):
        for mode in ("truncated", "shared_prefix"):
            secs, _ = run(enc, mode, sub[:n], templates, 512)
            print(f"{n} synonym(s) x {len(templates)}: {mode:14s} {secs:6.3f} s")
    if args.full:
        batch = int(args.batch_sizes.split(",")[-1])
        secs, _ = run(enc, "shared_prefix", syn, templates, batch)
        allp = [p for s in syn for p in make_prompts(s, templates)]
        ntok = tokens_run(enc, allp, templates, "shared_prefix", batch)
        print(f"ADE-150 full {len(allp)} prompts batch {batch}: shared_prefix {secs:.1f} s  "
              f"{len(allp) / secs:.0f} prompts/s  {ntok / secs:.0f} tokens/s  "
              f"{2 * params * ntok / secs / 1e9:.1f} GFLOP/s  load {os.getloadavg()}")


if __name__ == "__main__":
    main()
