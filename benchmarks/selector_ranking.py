"""The measurement behind residual-sift's keypoint selector (docs/MODELS.md): does a learned ranking of all SIFT
detections raise RootSIFT's MMA@3 at the top 1000 on bsds500/val warps (moderate and hard presets, 25 pairs each)?

usage: .venv/bin/python benchmarks/selector_ranking.py N_TRAIN_PAIRS LABEL BORDER
  LABEL rep: "has a ground-truth partner within 3 px"; nn: and RootSIFT's nearest neighbour is that partner
  BORDER 1 / 0: with / without the border-distance feature
The documented numbers: `benchmarks/selector_ranking.py 150 rep 1` (a standalone MLP fitted on 150 warped training
pairs, not the shipped selector; the fourth feature column is a constant 0, as in that run).
"""
import sys, time, math
import numpy as np, torch, cv2
from omegaconf import OmegaConf
from featlab.conf import resolve_conf
from featlab.training import patch_residual as pr
from featlab.training.residual import homography_correspondences
from featlab.extractors import build_extractor
from featlab.io.image import list_images, read_image, image_to_tensor
from featlab.datasets.synthetic import SyntheticHomographyPairs, preset_conf
from featlab.geometry.homography import warp_points_homography
from featlab.matching import match_descriptors
from featlab.eval.metrics import mma
LABEL = sys.argv[2]; BORDER = float(sys.argv[3])
torch.set_num_threads(1); cv2.setNumThreads(1)
conf = resolve_conf(pr.default_conf, OmegaConf.load(pr.DEFAULT_CONFIG), "")
g = build_extractor("rootsift", {"max_keypoints": -1})

def feats(img):
    p = g({"image": image_to_tensor(img)})
    kp = p["keypoints"][0].numpy(); sc = p["keypoint_scores"][0].numpy(); d = p["descriptors"][0].numpy()
    s = p["scales"][0].numpy(); o = p["oris"][0].numpy()
    H, W = img.shape[:2]
    bd = np.minimum.reduce([kp[:, 0], kp[:, 1], W - kp[:, 0], H - kp[:, 1]]) / min(H, W)
    x = np.concatenate([np.log(sc[:, None] + 1e-6), np.log(s[:, None]), np.minimum(bd[:, None], 0.2) * 5 * BORDER,
                        np.cos(np.radians(o))[:, None] * 0, d], 1).astype(np.float32)
    return kp, sc, d, x

def labels(kp0, kp1, d0, d1, H):
    gt = homography_correspondences(kp0, kp1, H, 3.0, d0, d1)
    if LABEL == "rep":
        return (gt >= 0).astype(np.float32)
    nn = np.argmax(d0 @ d1.T, 1)
    return ((gt >= 0) & (nn == gt)).astype(np.float32)

def make_train(n):
    photos = [p for f in conf.data.photos for p in list_images(f)]
    ds = pr.PatchPairStream(photos, conf, seed=0)
    X, Y = [], []
    for i in range(n):
        rng = np.random.default_rng([7, i])
        photo = read_image(photos[rng.integers(len(photos))])
        a, b, H = ds.warped_pair(rng, photo)
        kp0, _, d0, x0 = feats(a); kp1, _, d1, x1 = feats(b)
        X += [x0, x1]; Y += [labels(kp0, kp1, d0, d1, H), labels(kp1, kp0, d1, d0, np.linalg.inv(H))]
    return np.concatenate(X), np.concatenate(Y)

t = time.time()
X, Y = make_train(int(sys.argv[1]) if len(sys.argv) > 1 else 150)
print("train kps", len(X), "pos rate", Y.mean(), "time", time.time() - t, flush=True)
Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
mu, sd = Xt.mean(0), Xt.std(0) + 1e-6
net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
opt = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-4)
for ep in range(30):
    perm = torch.randperm(len(Xt))
    for k in range(0, len(Xt), 4096):
        j = perm[k:k + 4096]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net((Xt[j] - mu) / sd)[:, 0], Yt[j])
        opt.zero_grad(); loss.backward(); opt.step()
print("bce", loss.item(), flush=True)

def rank(x):
    with torch.no_grad():
        return net((torch.from_numpy(x) - mu) / sd)[:, 0].numpy()

for k, preset in enumerate(["moderate", "hard"]):
    pairs = SyntheticHomographyPairs(conf.val.photos, {"seed": 1234 + k, "role": "select", "max_images": 25,
        "crop": "center", "resize": [480, 640], **preset_conf(preset)})
    res = {"resp": [], "learned": [], "mix": []}; n_all = []
    for item in pairs:
        f = [feats(item["image0"]), feats(item["image1"])]
        n_all.append(len(f[0][0]))
        for how in res:
            sel = []
            for kp, sc, d, x in f:
                if how == "resp": o = np.argsort(-sc)
                elif how == "learned": o = np.argsort(-rank(x))
                else: o = np.argsort(-(rank(x) + np.log(sc + 1e-6)))
                sel.append(o[:1000])
            (kp0, _, d0, _), (kp1, _, d1, _) = f
            s0, s1 = sel
            m0, _ = match_descriptors(torch.from_numpy(d0[s0]), torch.from_numpy(d1[s1]), mutual=True)
            m0 = m0.numpy()
            v = mma(kp0[s0], kp1[s1], m0, item["H_0to1"], thresholds=(3.0,))[0]
            res[how].append((v, (m0 >= 0).sum(), v * (m0 >= 0).sum()))
    print(preset, "detections median", np.median(n_all))
    for how, r in res.items():
        r = np.array(r); print(f"  {how:8s} mma@3 {r[:,0].mean():.4f} matches {r[:,1].mean():.1f} correct {r[:,2].mean():.1f}", flush=True)
