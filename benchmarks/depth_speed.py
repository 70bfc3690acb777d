"""Wall-clock extraction time of the depth extractors on 7-Scenes depth maps (one thread): the 100 ms target of issue 12.

usage: .venv/bin/python benchmarks/depth_speed.py  (reads ../shared/data/rgbd/7scenes_redkitchen frames 400-409)
"""
import time, numpy as np, torch, glob
from featlab.extractors import build_extractor
from featlab.extractors.base import extract_depth
from featlab.io.depth import read_depth
torch.set_num_threads(1)
files = sorted(glob.glob("../shared/data/rgbd/7scenes_redkitchen/frame-0004*.depth.png"))[:10]
K = np.array([[585., 0, 320], [0, 585., 240], [0, 0, 1]])
for name in ("depthkp", "sift-depth"):
    ext = build_extractor(name, {})
    d = read_depth(files[0]); extract_depth(ext, d, K)
    ts = []
    for f in files:
        d = read_depth(f); t = time.perf_counter(); out = extract_depth(ext, d, K); ts.append(time.perf_counter() - t)
    print(name, d.shape, f"median {1000*np.median(ts):.1f} ms", len(out["keypoints"]), "kpts")
