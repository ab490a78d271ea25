#!/usr/bin/env python3
"""An independent check of `dvsp audit`'s robustness index (RI).

It shares no code with dvsp: its own reader of the model's safetensors and of the MNIST
files, its own port of the small LeNet-style net in JAX, and a different minimal-norm attack,
FMN-L2 (Pintor et al. 2021, "Fast minimum-norm adversarial attacks through adaptive norm
constraints", the adv_lib schedule: cosine-annealed step alpha 1 -> 0.01 and norm-update
gamma 0.05 -> 0.001; epsilon starts at the start's norm), adapted to the feature-space goal D(f(x~), f(x2)) <= T with
D = 1 - cos. It attacks the very pairs of an `audit.json` (same images, same threshold T)
from x1, from the segment point and from random starts, keeps per pair the smallest point
that a fresh forward pass accepts, and falls back to bisection on the segment [x1, x2]
(x2 itself is always accepted), so no pair is dropped. RI is the mean over ordered class
pairs of the mean attacked L2 (the audit's definition).

    python scripts/independent_attack.py runs/table1/dvsp/seed0 \
        runs/table1/dvsp/seed0/audit.json --steps 1000 --random-starts 2

`make independent-check` sets up the JAX environment and runs it on every seed-0 audit of
Table 1. Only the small backbone on MNIST is ported.
"""
import argparse
import gzip
import json
import os
import struct
import sys
import time

import numpy as np
import jax
import jax.numpy as jnp

MNIST_TRAIN = 50_000  # test split: training file images 50000..60000 (paper section 4.2)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {meta['dtype']}, only F32 is read")
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype="<f4").reshape(meta["shape"])
    return out


def read_mnist_test(data_dir):
    """The test split's images in [0, 1] `[N, 1, 28, 28]` and labels `[N]`."""
    with gzip.open(os.path.join(data_dir, "train-images-idx3-ubyte.gz"), "rb") as f:
        raw = f.read()
    magic, count, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 2051:
        raise SystemExit("not an idx3 image file")
    if count != 60_000:
        raise SystemExit(f"{data_dir}: {count} training images, MNIST has 60000")
    images = np.frombuffer(raw[16:], dtype=np.uint8).reshape(count, 1, rows, cols)
    with gzip.open(os.path.join(data_dir, "train-labels-idx1-ubyte.gz"), "rb") as f:
        raw = f.read()
    if struct.unpack(">II", raw[:8]) != (2049, count):
        raise SystemExit("not the idx1 label file of the images")
    labels = np.frombuffer(raw[8:], dtype=np.uint8)
    return images[MNIST_TRAIN:].astype(np.float32) / 255.0, labels[MNIST_TRAIN:]


def sampled_eer(features, images, labels, n, seed):
    """EER of all pairs among `n` sampled test images: a check of the port against the
    model card's test EER (which is over all pairs of the 10,000)."""
    idx = np.random.default_rng(seed).choice(len(images), size=n, replace=False)
    f = np.concatenate([np.asarray(unit(features(jnp.asarray(images[idx[i : i + 500]])))) for i in range(0, n, 500)])
    d = 1.0 - f @ f.T
    iu = np.triu_indices(n, 1)
    same = (labels[idx][:, None] == labels[idx][None, :])[iu]
    d = d[iu]
    genuine, impostor = np.sort(d[same]), np.sort(d[~same])
    ts = np.quantile(d, np.linspace(0.0, 0.2, 4001))
    fnmr = 1.0 - np.searchsorted(genuine, ts, side="right") / len(genuine)
    fmr = np.searchsorted(impostor, ts, side="right") / len(impostor)
    i = int(np.argmin(np.abs(fnmr - fmr)))
    if i == len(ts) - 1:
        raise SystemExit("the EER check's threshold grid (distance quantiles 0..0.2) is too short")
    return float((fnmr[i] + fmr[i]) / 2)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"{path}: {e}")


def make_features(model_dir, card):
    net = card["net"]
    if net["backbone"] != "small" or card["training"]["dataset"] != "mnist":
        raise SystemExit(f"only the small backbone on mnist is ported, not {net['backbone']} on {card['training']['dataset']}")
    w = {k: jnp.asarray(v) for k, v in read_safetensors(os.path.join(model_dir, "model.safetensors")).items()}
    mean, std = net["input"]["mean"], net["input"]["std"]
    # The compared feature: mu for dvsp/dvib (dvsp's projection R mu/||mu|| keeps cosines),
    # the feature layer for center and sphereface.
    head = "head.mu" if "head.mu.weight" in w else "head.fc"

    def conv(x, name):
        y = jax.lax.conv_general_dilated(
            x, w[name + ".weight"], (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW")
        )
        return y + w[name + ".bias"][None, :, None, None]

    def prelu(x, name):
        a = w[name + ".weight"]
        a = a[None, :, None, None] if x.ndim == 4 else a[None, :]
        return jnp.where(x >= 0, x, a * x)

    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def features(x):
        h = (x - mean) / std
        h = pool(prelu(conv(h, "backbone.conv1"), "backbone.act1"))
        h = pool(prelu(conv(h, "backbone.conv2"), "backbone.act2"))
        h = h.reshape(h.shape[0], -1)
        h = prelu(h @ w["backbone.fc.weight"].T + w["backbone.fc.bias"], "backbone.act3")
        return h @ w[head + ".weight"].T + w[head + ".bias"]

    return features


def unit(v):
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def norms(d):
    return jnp.sqrt(jnp.sum(d.reshape(d.shape[0], -1) ** 2, axis=1))


def view(v):
    return v[:, None, None, None]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("audit_json")
    ap.add_argument("--steps", type=int, default=1000, help="FMN steps per start")
    ap.add_argument("--random-starts", type=int, default=2)
    ap.add_argument("--bisect", type=int, default=20, help="segment bisection steps")
    ap.add_argument("--data", default=os.path.expanduser("~/.cache/dvsp/data/mnist"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eer-images", type=int, default=3000, help="test images of the EER check")
    ap.add_argument("--out", help="write per-pair results here (JSON)")
    args = ap.parse_args()
    if args.steps < 1 or args.random_starts < 0 or args.bisect < 1 or not 2 <= args.eer_images <= 10_000:
        raise SystemExit("--steps and --bisect must be >= 1, --random-starts >= 0, --eer-images in 2..10000")

    audit = read_json(args.audit_json)
    card = read_json(os.path.join(args.model_dir, "model.json"))
    if "pairs" not in audit or "threshold" not in audit:
        raise SystemExit(f"{args.audit_json}: not an audit.json (no pairs or threshold)")
    if audit.get("model_id") != card.get("model_id"):
        raise SystemExit(f"{args.audit_json} audits model {audit.get('model_id')}, {args.model_dir} is {card.get('model_id')}")
    pairs = audit["pairs"]
    t = float(audit["threshold"])
    try:
        test, labels = read_mnist_test(args.data)
    except OSError as e:
        raise SystemExit(f"MNIST in {args.data}: {e} (make setup fetches it)")
    if not pairs or not all(0 <= p[k] < len(test) for p in pairs for k in ("source_index", "target_index")):
        raise SystemExit(f"{args.audit_json}: no pairs, or an image index outside the {len(test)} test images")
    x1 = jnp.asarray(test[[p["source_index"] for p in pairs]])
    x2 = jnp.asarray(test[[p["target_index"] for p in pairs]])
    features = make_features(args.model_dir, card)
    target = unit(features(x2))

    def distance(x):
        return 1.0 - jnp.sum(unit(features(x)) * target, axis=-1)

    dist = jax.jit(distance)
    # L(x) = D(f(x), f(x2)) - T, accepted iff L <= 0; the per-pair gradients come from the
    # gradient of the sum, as the pairs are independent.
    @jax.jit
    def value_and_grad(delta):
        def total(d):
            l = distance(x1 + d) - t
            return jnp.sum(l), l

        (_, l), g = jax.value_and_grad(total, has_aux=True)(delta)
        return l, g

    worst = norms(jnp.maximum(x1, 1.0 - x1))

    @jax.jit
    def fmn_step(state, k):
        delta, eps, best, best_norm, found = state
        cosine = (1.0 + jnp.cos(jnp.pi * k / args.steps)) / 2.0
        alpha = 0.01 + (1.0 - 0.01) * cosine
        gamma = 0.001 + (0.05 - 0.001) * cosine
        n = norms(delta)
        l, g = value_and_grad(delta)
        adv = l <= 0.0
        better = adv & (n < best_norm)
        best_norm = jnp.where(better, n, best_norm)
        best = jnp.where(view(better), delta, best)
        found = found | adv
        gnorm = jnp.maximum(norms(g), 1e-12)
        to_boundary = jnp.abs(l) / gnorm
        eps = jnp.where(
            adv,
            jnp.minimum(eps * (1.0 - gamma), best_norm),
            jnp.where(found, eps * (1.0 + gamma), n + to_boundary),
        )
        eps = jnp.minimum(eps, worst)
        delta = delta - alpha * g / view(gnorm)
        n = norms(delta)
        delta = delta * view(jnp.minimum(1.0, eps / jnp.maximum(n, 1e-12)))
        delta = jnp.clip(x1 + delta, 0.0, 1.0) - x1
        return (delta, eps, best, best_norm, found)

    def fmn(delta0):
        n0 = norms(delta0)
        adv0 = dist(x1 + delta0) <= t
        state = (delta0, n0, delta0, jnp.where(adv0, n0, jnp.inf), adv0)
        for k in range(args.steps):
            state = fmn_step(state, float(k))
        _, _, best, _, found = state
        # re-check the kept point by a fresh forward pass
        ok = found & (dist(x1 + best) <= t)
        return jnp.where(ok, norms(best), jnp.inf)

    # Segment bound: the smallest accepted a on x1 + a (x2 - x1) found by bisection.
    lo = jnp.zeros(len(pairs))
    hi = jnp.ones(len(pairs))
    for _ in range(args.bisect):
        mid = (lo + hi) / 2
        acc = dist(x1 + view(mid) * (x2 - x1)) <= t
        hi = jnp.where(acc, mid, hi)
        lo = jnp.where(acc, lo, mid)
    already = dist(x1) <= t
    hi = jnp.where(already, 0.0, hi)
    seg = view(hi) * (x2 - x1)
    if not bool(jnp.all(dist(x1 + seg) <= t)):
        raise SystemExit("a segment bound is not accepted: the port disagrees with the audit's model")
    best_l2 = norms(seg)
    seg_l2 = np.asarray(best_l2, dtype=np.float64)
    winner = np.array(["segment"] * len(pairs), dtype=object)

    started = time.time()
    key = jax.random.PRNGKey(args.seed)
    starts = [("x1", jnp.zeros_like(x1)), ("segment", seg)]
    for r in range(args.random_starts):
        key, sub = jax.random.split(key)
        u = jax.random.normal(sub, x1.shape)
        u = u / view(norms(u)) * view(best_l2)
        starts.append((f"random{r}", jnp.clip(x1 + u, 0.0, 1.0) - x1))
    for name, d0 in starts:
        l2 = fmn(d0)
        better = l2 < best_l2
        winner[np.asarray(better)] = f"fmn-{name}"
        best_l2 = jnp.minimum(best_l2, l2)
    seconds = time.time() - started
    best_l2 = np.asarray(best_l2, dtype=np.float64)

    # RI: mean over ordered class pairs of the mean L2 (cells of the audit's H).
    def ri(values):
        cells = {}
        for p, v in zip(pairs, values):
            cells.setdefault((p["source_class"], p["target_class"]), []).append(v)
        return float(np.mean([np.mean(v) for v in cells.values()]))

    audit_l2 = np.array([p["l2"] for p in pairs], dtype=np.float64)
    # a pair both leave at 0 counts as agreement, one only the audit leaves at 0 as inf
    ratio = np.where(audit_l2 > 0, best_l2 / np.maximum(audit_l2, 1e-12), np.where(best_l2 > 0, np.inf, 1.0))
    audit_segment = np.array([p["members"]["segment"] for p in pairs], dtype=np.float64)
    moved = ~np.asarray(already)
    wins = {w: int(np.sum(winner == w)) for w in sorted(set(winner))}
    summary = {
        "model_dir": args.model_dir,
        "audit": args.audit_json,
        "threshold": t,
        "pairs": len(pairs),
        "steps": args.steps,
        "starts": len(starts),
        "ri_independent": ri(best_l2),
        "ri_audit": ri(audit_l2),
        "ratio": ri(best_l2) / ri(audit_l2),
        "pairs_below_audit": int(np.sum(best_l2 < audit_l2)),
        "pairs_accepted_unchanged": int(np.sum(np.asarray(already))),
        "min_pair_ratio": float(np.min(ratio)),
        "max_pair_ratio": float(np.max(ratio)),
        "wins": wins,
        "attack_seconds": seconds,
        "port_check": {
            # over the pairs x1 does not already satisfy (the audit bisects those too)
            "segment_bound_max_relative_difference": float(
                np.max((np.abs(seg_l2 - audit_segment) / np.maximum(audit_segment, 1e-12))[moved], initial=0.0)
            ),
            "sampled_eer": sampled_eer(features, test, labels, args.eer_images, args.seed),
            "sampled_eer_images": args.eer_images,
            "card_test_eer": card["metrics"]["test"]["eer"],
        },
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        summary["l2"] = best_l2.tolist()
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
