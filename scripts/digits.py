#!/usr/bin/env python3
"""Writes MNIST test digits as PNG files (stdlib only), for trying the service with curl.

usage: digits.py OUT_DIR [COUNT_PER_DIGIT]   -> OUT_DIR/<digit>_<n>.png
Images come from the paper's test split (training file images 50000..59999).
"""
import gzip, os, struct, sys, zlib

root = os.environ.get("DVSP_DATA", os.path.expanduser("~/.cache/dvsp/data"))
out = sys.argv[1]
per = int(sys.argv[2]) if len(sys.argv) > 2 else 3
imgs = gzip.open(os.path.join(root, "mnist/train-images-idx3-ubyte.gz")).read()
labs = gzip.open(os.path.join(root, "mnist/train-labels-idx1-ubyte.gz")).read()
os.makedirs(out, exist_ok=True)

def png(path, pixels, w, h):
    raw = b"".join(b"\x00" + pixels[y * w:(y + 1) * w] for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    open(path, "wb").write(data)

count = {d: 0 for d in range(10)}
for i in range(50000, 60000):
    d = labs[8 + i]
    if count[d] < per:
        png(os.path.join(out, f"{d}_{count[d]}.png"), imgs[16 + i * 784:16 + (i + 1) * 784], 28, 28)
        count[d] += 1
print(f"wrote {sum(count.values())} digits to {out}")
