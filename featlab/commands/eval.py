"""``featlab eval``: benchmarks of local features.

  featlab eval hpatches  homography benchmark on HPatches (--hpatches ROOT) or on synthetic warps of a photo
                         folder (--synthetic DIR): MMA@1..10 px, homography accuracy Cor-1/3/5, matching score,
                         repeatability
  featlab eval relpose   relative pose on an RGB-D sequence (7-Scenes/TUM layout) or a COLMAP model (wide
                         baseline, e.g. Strecha's Herz-Jesus-P25): AUC@5/10/20 per gap
  featlab eval register  3D registration of depth-view pairs of an RGB-D sequence: keypoints lifted with depth,
                         RANSAC over 3-point rigid fits; registration recall, errors, inlier ratio (FPFH baseline)
  featlab eval speed     extraction and matching time per method and image size
  featlab eval sfm       reconstructions (featlab reconstruct) against ground-truth cameras: Sim(3)
                         alignment, per-image rotation and position errors, registered images

Features are extracted once per image and cached under OUTDIR/cache (rerunning reuses them); results are written
to OUTDIR as JSON (every number plus the resolved config), a Markdown table and a plot.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import ConfigError, InputError

logger = logging.getLogger(__name__)

HOMOGRAPHY_ESTIMATORS = ("ransac", "magsac", "poselib")


def _add_common(p: argparse.ArgumentParser):
    p.add_argument("--methods", nargs="+", required=True, metavar="NAME",
                   help="extractor names, evaluated side by side (see `featlab models`); LABEL=NAME evaluates "
                        "NAME under LABEL, e.g. to compare weights with --method-conf LABEL.weights=PATH")
    p.add_argument("--method-conf", nargs="*", default=[], metavar="METHOD.KEY=VALUE",
                   help="per-method config overrides, e.g. disk.weights=/path/disk.pth")
    p.add_argument("--device", default="cpu", help="torch device for the extractors (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (also holds the feature cache)")


def register(sub):
    p = sub.add_parser("eval", help="benchmarks: hpatches | relpose | register | speed", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    esub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    esub.required = True

    h = esub.add_parser("hpatches", help="homography benchmark (HPatches or synthetic warps of photos)",
                        description=HPATCHES_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(h)
    src = h.add_mutually_exclusive_group(required=True)
    src.add_argument("--hpatches", type=Path, metavar="ROOT", help="HPatches root (sequence folders)")
    src.add_argument("--synthetic", type=Path, metavar="PHOTO_DIR",
                     help="folder of photos warped by random homographies (labelled 'synthetic warps')")
    h.add_argument("--split", choices=("all", "i", "v"), default="all", help="HPatches split (default: all)")
    h.add_argument("--sequences", nargs="+", default=None, help="only these HPatches sequences")
    h.add_argument("--pairs-per-image", type=int, default=None, help="synthetic: pairs per photo (default: 1)")
    h.add_argument("--max-images", type=int, default=None, help="synthetic: use only the first N photos")
    h.add_argument("--seed", type=int, default=None, help="synthetic: seed of the warps (default: 0)")
    h.add_argument("--preset", default=None, metavar="NAME",
                   help="synthetic: warp preset, moderate | hard | zoom-in (default: moderate; zoom-in is the "
                        "training distribution, for older tables)")
    h.add_argument("--protocol", default="resized", metavar="NAME",
                   help="resized (residual paper: images resized to the setting, the default) | d2net (full "
                        "resolution, the 108-sequence list, 8000 keypoints; --hpatches only)")
    h.add_argument("--setting", default=None, help="resized: 240x320_300 | 480x640_1000 (default: 480x640_1000)")
    h.add_argument("--resize", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="resized: image size, overrides the setting's")
    h.add_argument("--resize-mode", default=None, metavar="MODE",
                   help="resized, --hpatches: exact (H x W, aspect not kept, the default) | longest-side (aspect "
                        "kept, longest side max(H, W))")
    h.add_argument("--max-keypoints", type=int, default=None,
                   help="top-k keypoints, overrides the setting's (d2net: default 8000)")
    h.add_argument("--estimator", choices=HOMOGRAPHY_ESTIMATORS, default="ransac",
                   help="robust homography estimator (default: ransac, as SuperPoint)")
    h.add_argument("--ransac-threshold", type=float, default=3.0, help="inlier threshold in px (default: 3)")
    h.set_defaults(func=run_hpatches)

    from ..geometry.robust import RELPOSE_METHODS

    r = esub.add_parser("relpose", help="relative pose on an RGB-D sequence or a COLMAP model (AUC@5/10/20)",
                        description=RELPOSE_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(r)
    data = r.add_mutually_exclusive_group(required=True)
    data.add_argument("--rgbd", type=Path, metavar="ROOT", help="RGB-D sequence folder (7-Scenes / TUM layout)")
    data.add_argument("--colmap", type=Path, metavar="SCENE",
                      help="COLMAP model with ground-truth poses: a scene folder holding sparse/ (or sparse/0/) and "
                           "images/, or the model folder itself")
    r.add_argument("--gaps", type=int, nargs="+", default=None,
                   help="pair gaps: frame gaps (--rgbd, default: 10 30 60) or image index gaps in name order "
                        "(--colmap, default: 3 4 5 6 7)")
    r.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="--colmap: images resized so that the longest side is N, aspect kept, K scaled; the "
                        "threshold is in these pixels (default: 768, i.e. 1536x1024 -> 768x512)")
    r.add_argument("--frames", type=int, nargs=2, default=None, metavar=("FIRST", "LAST"),
                   help="--rgbd: frame index range, both inclusive (default: 0 499)")
    r.add_argument("--min-covisibility", type=float, default=None,
                   help="--rgbd: minimum depth-based covisibility of a pair (default: the dataset's)")
    r.add_argument("--max-pairs-per-gap", type=int, default=None, help="--rgbd: subsample pairs per gap")
    r.add_argument("--seed", type=int, default=None, help="--rgbd: seed of the pair subsampling (default: 0)")
    r.add_argument("--focal", type=float, default=None,
                   help="--rgbd: focal length of the intrinsics in px (default: the dataset's; 7-Scenes colour "
                        "images: 525, the file's 585 being the depth sensor's)")
    r.add_argument("--pairs", type=Path, default=None, help="use this saved pair list instead of making pairs")
    r.add_argument("--resize", type=int, nargs="+", default=None, metavar="N",
                   help="extraction size: one int (longest side) or H W, keypoints mapped back to the evaluated "
                        "image (default: as evaluated)")
    r.add_argument("--max-keypoints", type=int, default=2048, help="top-k keypoints (default: 2048)")
    r.add_argument("--estimator", choices=RELPOSE_METHODS, default=RELPOSE_METHODS[0],
                   help="relative-pose estimator (default: superglue = SuperGlue's protocol: OpenCV RANSAC on "
                        "K-normalised points, confidence 0.99999, recoverPose)")
    r.add_argument("--ransac-threshold", type=float, default=1.0,
                   help="inlier threshold in px, divided by the pair's mean focal length (default: 1)")
    r.add_argument("--confidence", type=float, default=None,
                   help="RANSAC confidence (default: the estimator's; superglue 0.99999, others 0.9999)")
    r.add_argument("--max-iters", type=int, default=None,
                   help="RANSAC iteration cap (default: the estimator's; superglue 1000, others 10000)")
    r.set_defaults(func=run_relpose)

    _add_register(esub)

    s = esub.add_parser("speed", help="extraction and matching time", description=SPEED_DOC,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(s)
    s.add_argument("--sizes", nargs="+", default=["240x320", "480x640"], metavar="HxW",
                   help="image sizes (default: 240x320 480x640)")
    s.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (default: 10)")
    s.add_argument("--image", type=Path, default=None,
                   help="image to time on (default: scikit-image's astronaut photo)")
    s.add_argument("--max-keypoints", type=int, default=2048, help="top-k keypoints (default: 2048)")
    s.set_defaults(func=run_speed)

    from ..eval.sfm import add_cli as _add_sfm  # featlab eval sfm: defined beside its benchmark
    _add_sfm(esub)


HPATCHES_DOC = """Homography benchmark (SuperPoint / D2-Net metrics), under a named protocol.

--protocol resized (default, the residual-descriptor paper): both images of each pair are resized to the setting's
size (exactly, or with --resize-mode longest-side keeping the aspect ratio; GT homography adapted). --protocol d2net
(D2-Net, --hpatches only): full resolution, the 108 sequences left without the 8 high-resolution ones, top 8000
keypoints. Each extractor keeps its top-k keypoints, matches are mutual nearest neighbours. Per pair: MMA@1..10 px (fraction of matches whose
reprojection error with the GT homography is <= t), homography accuracy Cor-1/3/5 (mean error of the 4 warped image
corners of the robustly estimated homography <= t px; a failed estimate counts as wrong), matching score (SuperPoint:
correct matches / keypoints in the shared region, both directions averaged) and symmetric repeatability at 3 px;
then averaged over pairs, overall and per i_/v_ split, and per bin of the GT in-plane rotation and scale. With
--synthetic every output is labelled "synthetic warps of <folder>" and names its --preset: moderate (rotation
+-30 deg, scale 0.7-1.4, perspective 0.2) or hard (+-60 deg, scale 0.5-2, perspective 0.35), photometric changes
included, the pairs drawn from the benchmark's random stream.

Settings (residual-descriptor paper): 240x320_300, 480x640_1000 (H x W _ keypoints).
"""

RELPOSE_DOC = """Relative-pose benchmark on an RGB-D sequence (7-Scenes / TUM layout) or a COLMAP model.

Pairs (saved to OUTDIR/relpose_pairs.txt): --rgbd, frame pairs at the given gaps with enough depth-based
covisibility; --colmap, every pair (i, i + d) of the images sorted by name, for each gap d, at the --image-size
(wide baseline: on Herz-Jesus-P25 the median relative rotation grows from 24 degrees at gap 3 to 46 at gap 7, each
gap spanning 9-75 degrees; the tables print every gap's range). Mutual nearest-neighbour
matching, relative pose by --estimator (default superglue: SuperGlue's protocol, OpenCV RANSAC essential matrix on
K-normalised points, threshold 1 px / mean focal, confidence 0.99999, recoverPose); pose error = max(rotation angle
error, translation direction error) in degrees, failures count as infinite; AUC@5/10/20 per gap and overall, one
table per gap with the ground-truth rotation angles of its pairs. Every output names the estimator, its threshold,
confidence and iteration cap, and the intrinsics.

  featlab eval relpose --methods sift --rgbd ../shared/data/rgbd/7scenes_redkitchen --frames 400 499 --gaps 20 30 45 -o out/
  featlab eval relpose --methods sift --colmap ../shared/data/posed/strecha/Herz-Jesus-P25 --gaps 3 4 5 6 7 -o out/
"""

SPEED_DOC = """Speed benchmark: median extraction time per image (forward pass on a resized tensor) and median mutual
nearest-neighbour matching time, after a warm-up run, at each image size; the torch thread count is recorded.
"""


def _setup(args):
    """Threads and the output folder; returns the output folder."""
    import torch

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path exists and is not a folder: {out}")
    return out


def _write_results(out: Path, benchmark: str, result: dict, args, report, plot=None, pairs_file: str | None = None):
    """The end of every ``featlab eval`` benchmark: ``OUT/<benchmark>_results.json`` (result + arguments +
    environment), its Markdown report (printed too), an optional plot ``(function, file name)``; returns 0."""
    from ..eval.report import args_to_dict, environment, write_json, write_markdown

    result = {"benchmark": benchmark, **result, "args": args_to_dict(args), "environment": environment()}
    write_json(out / f"{benchmark}_results.json", result)
    md = report(result)
    write_markdown(out / f"{benchmark}_results.md", md)
    extra = ["and .md"]
    if plot is not None:
        plot[0](result, out / plot[1])
        extra.append(plot[1])
    if pairs_file:
        extra.append(pairs_file)
    print(md)
    print(f"results: {out / f'{benchmark}_results.json'} ({', '.join(extra)})")
    return 0


def _progress(args):
    return False if args.no_progress else None


def _methods(args, common: dict):
    from ..eval.cache import build_methods, parse_method_overrides

    return build_methods(args.methods, common, parse_method_overrides(args.method_conf, args.methods),
                         device=args.device)


# ------------------------------------------------------------------------------------------------ hpatches
def run_hpatches(args) -> int:
    from ..eval import hpatches

    out = _setup(args)
    if args.synthetic is not None and (args.protocol != "resized" or args.resize_mode is not None):
        raise ConfigError("--protocol d2net and --resize-mode apply to --hpatches only (synthetic pairs are made "
                          "at the setting's size)")
    proto = hpatches.protocol_conf(args.protocol, args.setting, args.resize, args.max_keypoints, args.resize_mode)
    size, k = proto["resize"], proto["max_keypoints"]
    if args.pairs_per_image is not None and args.pairs_per_image < 1:
        raise ConfigError(f"--pairs-per-image must be >= 1, got {args.pairs_per_image}")
    if args.hpatches is not None and any(v is not None for v in (args.pairs_per_image, args.max_images, args.seed,
                                                                 args.preset)):
        raise ConfigError("--pairs-per-image, --max-images, --seed and --preset apply to --synthetic only")
    # build everything before any work: bad method names / weights and bad data paths fail first
    methods = _methods(args, {"max_keypoints": k, "resize": None})
    if args.hpatches is not None:
        from ..datasets.hpatches import D2NET_EXCLUDED, HPatches

        exclude = list(D2NET_EXCLUDED) if proto["protocol"] == "d2net" else []
        # native images: the benchmark resizes them (one resize, one place)
        dataset = HPatches(args.hpatches, sequences=args.sequences, split=args.split, conf={"exclude": exclude})
        label = f"HPatches ({args.hpatches.name}: {len(dataset.sequences)} sequence(s), split {args.split})"
        benchmark = "hpatches"
        source = {"kind": "hpatches", "label": label, "root": str(args.hpatches.resolve()), "split": args.split,
                  "sequences": list(dataset.sequences), "dataset_conf": dataset.conf}
    else:
        from ..datasets import homographies
        from ..datasets.synthetic import SyntheticHomographyPairs, preset_conf

        if args.sequences is not None or args.split != "all":
            raise ConfigError("--sequences and --split apply to --hpatches only")
        preset = args.preset or "moderate"
        dataset = SyntheticHomographyPairs(args.synthetic, {
            "resize": list(size), "pairs_per_image": args.pairs_per_image or 1, "max_images": args.max_images,
            "seed": args.seed or 0, "role": "benchmark", **preset_conf(preset)})
        label = f"synthetic warps of {args.synthetic}"
        benchmark = "synthetic"
        source = {"kind": "synthetic", "label": label, "root": str(args.synthetic.resolve()),
                  "preset": preset, "warps": homographies.describe(dataset.conf.homography),
                  "photometric": bool(dataset.conf.photometric.enabled), "dataset_conf": dataset.conf,
                  "synthetic": True}
    conf = {**proto, "estimator": args.estimator, "ransac_threshold": args.ransac_threshold}
    logger.info("%s: %d pairs, methods %s, %s protocol, %s, top %d keypoints", label, len(dataset),
                ", ".join(methods), proto["protocol"], "full resolution" if size is None else
                f"{size[0]}x{size[1]} ({proto['resize_mode']})", k)
    result = hpatches.run_benchmark(dataset, methods, conf, out / "cache", source, progress=_progress(args))
    return _write_results(out, benchmark, {"title": label, **result}, args, hpatches.markdown_report,
                          (hpatches.plot_mma, f"{benchmark}_mma.png"))


def _parse_resize(values):
    """--resize: None, one int (longest side) or H W, each >= 16 -> None, int or [H, W]."""
    if values is None:
        return None
    if len(values) not in (1, 2) or min(values) < 16:
        raise ConfigError(f"--resize takes one int (longest side) or H W, each >= 16, got {values}")
    return values[0] if len(values) == 1 else list(values)


# ------------------------------------------------------------------------------------------------ relpose
def run_relpose(args) -> int:
    from ..eval import relpose
    from ..geometry.robust import relative_pose_settings

    out = _setup(args)
    resize = _parse_resize(args.resize)
    if args.max_keypoints <= 0:
        raise ConfigError(f"--max-keypoints must be positive, got {args.max_keypoints}")
    if args.gaps is not None and (not args.gaps or min(args.gaps) < 1):
        raise ConfigError(f"--gaps must be positive gaps, got {args.gaps}")
    conf = {"resize": resize, "max_keypoints": args.max_keypoints, "estimator": args.estimator,
            "ransac_threshold": args.ransac_threshold, "confidence": args.confidence, "max_iters": args.max_iters}
    relative_pose_settings(args.estimator, args.ransac_threshold, args.confidence, args.max_iters)  # fail early
    methods = _methods(args, {"max_keypoints": args.max_keypoints, "resize": None})
    if args.rgbd is not None:
        dataset, pairs, source, save_pairs = _relpose_rgbd(args)
    else:
        dataset, pairs, source, save_pairs = _relpose_colmap(args)
    out.mkdir(parents=True, exist_ok=True)
    source["pairs_file"] = str(save_pairs(out / "relpose_pairs.txt", pairs))
    logger.info("relpose on %s, methods %s", source["label"], ", ".join(methods))
    result = relpose.run_benchmark(dataset, pairs, methods, conf, out / "cache", source, progress=_progress(args))
    return _write_results(out, "relpose", {"title": f"Relative pose: {source['label']}", **result}, args,
                          relpose.markdown_report, (relpose.plot_cumulative_errors, "relpose_errors.png"),
                          "relpose_pairs.txt")


def _gap_label(pairs) -> str:
    return " ".join(map(str, sorted({j - i for i, j in pairs})))


def _relpose_rgbd(args):
    """RGB-D sequence, its pairs, the source record and the pairs writer."""
    from ..datasets.rgbd import RGBDSequence

    if args.image_size is not None:
        raise ConfigError("--image-size applies to --colmap only (use --resize for the extraction size)")
    seq_conf = {}
    if args.focal is not None:
        if args.focal <= 0:
            raise ConfigError(f"--focal must be positive, got {args.focal}")
        seq_conf["focal"] = float(args.focal)
    sequence = RGBDSequence(args.rgbd, seq_conf)
    if args.pairs is not None:
        pairs = sequence.load_pairs(args.pairs)
    else:
        kwargs = {"gaps": tuple(args.gaps or (10, 30, 60)), "seed": args.seed or 0}
        if args.min_covisibility is not None:
            kwargs["min_covisibility"] = args.min_covisibility
        if args.max_pairs_per_gap is not None:
            kwargs["max_pairs_per_gap"] = args.max_pairs_per_gap
        if args.frames is not None:
            first, last = args.frames
            if last < first:
                raise ConfigError(f"--frames FIRST LAST needs FIRST <= LAST, got {first} {last}")
            kwargs["frame_range"] = (first, last + 1)  # make_pairs' stop is exclusive
        pairs = sequence.make_pairs(**kwargs)
    if not pairs:
        raise InputError(f"no frame pair of {args.rgbd} passes the covisibility test for gaps {args.gaps} "
                         "(lower --min-covisibility or widen --frames)")
    label = f"{args.rgbd.name} ({len(pairs)} pairs, frame gaps {_gap_label(pairs)}, fx = fy = {sequence.K[0, 0]:g})"
    h, w = sequence.load_image(pairs[0][0]).shape[:2]
    source = {"kind": "rgbd", "label": label, "root": str(args.rgbd.resolve()), "intrinsics": sequence.intrinsics,
              "image_size": f"native ({w}x{h})", "gap_name": "frame gap",
              "dataset_conf": getattr(sequence, "conf", seq_conf)}
    return sequence, pairs, source, sequence.save_pairs


def _colmap_model_dir(path: Path) -> Path:
    """The model folder of a --colmap argument: SCENE/sparse/0, SCENE/sparse or SCENE itself."""
    for candidate in (path / "sparse" / "0", path / "sparse", path):
        if any((candidate / f"images{ext}").is_file() for ext in (".bin", ".txt")):
            return candidate
    raise InputError(f"no COLMAP model (images.txt or images.bin) in {path}, {path / 'sparse'} or "
                     f"{path / 'sparse' / '0'}")


def _relpose_colmap(args):
    """Posed views of a COLMAP model (resized, K scaled), the pairs, the source record and the pairs writer."""
    from ..conf import to_container
    from ..datasets.colmap import read_colmap
    from ..datasets.posed import PairSampler, PosedPairs
    from ..datasets.rgbd import write_pairs_file
    from ..eval.relpose import gap_pairs

    rgbd_only = {"--frames": args.frames, "--min-covisibility": args.min_covisibility,
                 "--max-pairs-per-gap": args.max_pairs_per_gap, "--seed": args.seed, "--focal": args.focal}
    given = [flag for flag, value in rgbd_only.items() if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} apply to --rgbd only")
    size = 768 if args.image_size is None else args.image_size
    if size < 16:
        raise ConfigError(f"--image-size must be >= 16, got {size}")
    if not args.colmap.is_dir():
        raise InputError(f"COLMAP scene folder not found: {args.colmap}")
    collection = read_colmap(_colmap_model_dir(args.colmap))
    if collection.root is None:
        raise InputError(f"no image folder found for the COLMAP model in {args.colmap} (expected images/ beside "
                         "sparse/)")
    pairs = PairSampler.load(args.pairs, collection) if args.pairs is not None else \
        gap_pairs(collection, args.gaps or (3, 4, 5, 6, 7))
    if not pairs:
        raise InputError(f"no image pair of {args.colmap} ({len(collection)} images) at gaps {args.gaps}")
    dataset = PosedPairs(collection, pairs, {"resize": size, "depth": False})
    sizes = sorted({tuple(int(v) for v in s) for s in collection.image_sizes})
    resized = ", ".join(f"{w}x{h} -> {dataset.output_size((h, w))[1]}x{dataset.output_size((h, w))[0]}"
                        for h, w in sizes)
    label = f"{collection.name} ({len(pairs)} pairs, image gaps {_gap_label(pairs)}, {resized})"
    source = {"kind": "colmap", "label": label, "root": str(args.colmap.resolve()),
              "image_size": f"longest side {size} ({resized}), K scaled", "gap_name": "image gap",
              "intrinsics": "per image from the COLMAP model, scaled to the resized images",
              "dataset_conf": to_container(dataset.conf)}

    def save_pairs(path, pairs):
        names = [(collection.names[i], collection.names[j]) for i, j in pairs]
        return write_pairs_file(path, names, header=f"relpose pairs of {collection.name} (image names)")

    return dataset, pairs, source, save_pairs


# ------------------------------------------------------------------------------------------------ speed
def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"size '{text}' must look like HxW, e.g. 480x640") from None
    if min(h, w) < 16:
        raise ConfigError(f"size '{text}' is too small (16 px a side at least)")
    return h, w


def run_speed(args) -> int:
    from ..eval import speed
    from ..io.image import read_image

    out = _setup(args)
    sizes = [_parse_size(s) for s in args.sizes]
    if args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
    methods = _methods(args, {"max_keypoints": args.max_keypoints, "resize": None})
    if args.image is not None:
        image, image_label = read_image(args.image), str(args.image)
    else:
        from skimage import data as skdata

        image, image_label = skdata.astronaut(), "scikit-image astronaut (512x512)"
    result = speed.run_benchmark(methods, image, sizes, args.repeats)
    return _write_results(out, "speed", {"image": image_label, **result}, args,
                          lambda r: speed.markdown_report(r, image_label))


# ------------------------------------------------------------------------------------------------ register
REGISTER_DOC = """3D registration benchmark on pairs of depth views of an RGB-D sequence (7-Scenes / TUM layout).

Pairs (saved to OUTDIR/register_pairs.txt): frames (i, i + gap) within --frames (default 400 499, 7-Scenes'
report-only split) at --gaps (default 20 30 45) with enough depth-based covisibility. Methods: depth extractors
(sift-depth, depthkp) on the depth maps; image extractors (rootsift, residual-sift...) on the colour images, their
keypoints moved into the depth map by K_depth K_colour^-1 (7-Scenes colour and depth are only approximately
registered: the outputs say so); fpfh, Open3D FPFH + RANSAC on the point clouds. Matched keypoints are lifted to 3D
with depth, the rigid motion found by RANSAC over 3-point Kabsch fits with refinement (no ICP). Per pair: rotation
(deg) and translation (cm) errors; tables: registration recall at (5 deg, 10 cm) and (2 deg, 5 cm), median errors,
inlier ratio (matches within 10 cm under the ground truth), feature-match recall (inlier ratio > 5 %), and the share
of pairs the identity motion would pass.

  featlab eval register --methods fpfh sift-depth rootsift --rgbd ../shared/data/rgbd/7scenes_redkitchen -o out/
"""


def _add_register(esub):
    g = esub.add_parser("register", help="3D registration of depth-view pairs (registration recall, FPFH baseline)",
                        description=REGISTER_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(g)
    g.add_argument("--rgbd", type=Path, required=True, metavar="ROOT",
                   help="RGB-D sequence folder (7-Scenes / TUM layout)")
    g.add_argument("--frames", type=int, nargs=2, default=[400, 499], metavar=("FIRST", "LAST"),
                   help="frame index range, both inclusive (default: 400 499, 7-Scenes' report-only frames)")
    g.add_argument("--gaps", type=int, nargs="+", default=[20, 30, 45], help="frame gaps (default: 20 30 45)")
    g.add_argument("--min-covisibility", type=float, default=0.3,
                   help="minimum depth-based covisibility of a pair (default: 0.3)")
    g.add_argument("--max-pairs-per-gap", type=int, default=50, help="pairs per gap at most (default: 50)")
    g.add_argument("--seed", type=int, default=0, help="seed of the pair subsampling and of RANSAC (default: 0)")
    g.add_argument("--pairs", type=Path, default=None, help="use this saved pair list instead of making pairs")
    g.add_argument("--depth-focal", type=float, default=None,
                   help="focal length of the depth maps in px (default: the sequence's camera-intrinsics.txt, "
                        "7-Scenes' 585; TUM: 525)")
    g.add_argument("--focal", type=float, default=None,
                   help="focal length of the colour images in px, for image extractors (default: the dataset's; "
                        "7-Scenes: 525)")
    g.add_argument("--resize", type=int, nargs="+", default=None, metavar="N",
                   help="extraction size: one int (longest side) or H W, keypoints mapped back (default: native)")
    g.add_argument("--max-keypoints", type=int, default=2048, help="top-k keypoints (default: 2048)")
    g.add_argument("--ransac-threshold", type=float, default=0.0375,
                   help="RANSAC inlier distance in metres (default: 0.0375, every method)")
    g.add_argument("--max-iters", type=int, default=100000, help="RANSAC samples at most (default: 100000)")
    g.add_argument("--confidence", type=float, default=0.999, help="RANSAC confidence (default: 0.999)")
    g.set_defaults(func=run_register)


def run_register(args) -> int:
    from ..eval import register

    out = _setup(args)
    resize = _parse_resize(args.resize)
    for flag, value in (("--max-keypoints", args.max_keypoints), ("--ransac-threshold", args.ransac_threshold),
                        ("--max-iters", args.max_iters)):
        if not value > 0:
            raise ConfigError(f"{flag} must be positive, got {value}")
    if not 0 < args.confidence < 1:
        raise ConfigError(f"--confidence must be in (0, 1), got {args.confidence}")
    if not args.gaps or min(args.gaps) < 1:
        raise ConfigError(f"--gaps must be positive gaps, got {args.gaps}")
    order = list(args.methods)
    if len(set(order)) != len(order):
        raise ConfigError(f"duplicate method in --methods: {' '.join(order)}")
    args.methods = [m for m in order if m not in register.POINT_CLOUD_METHODS]  # fpfh is not an extractor
    built = _methods(args, {"max_keypoints": args.max_keypoints, "resize": None}) if args.methods else {}
    args.methods = order
    if any(m in register.POINT_CLOUD_METHODS for m in order):
        from ..extractors.depth_baselines import import_open3d

        import_open3d()  # fail before any work when Open3D cannot load
    from ..eval.cache import method_label

    methods = {m: built.get(m) for m in (method_label(e)[0] for e in order)}
    sequence, colour, K_depth, pairs, source = register.load_sequence(args)
    out.mkdir(parents=True, exist_ok=True)
    source["pairs_file"] = str(sequence.save_pairs(out / "register_pairs.txt", pairs))
    conf = {"resize": resize, "max_keypoints": args.max_keypoints, "ransac_threshold": args.ransac_threshold,
            "max_iters": args.max_iters, "confidence": args.confidence, "seed": args.seed}
    logger.info("register on %s, methods %s", source["label"], ", ".join(methods))
    result = register.run_benchmark(sequence, pairs, methods, conf, out / "cache", source, K_depth=K_depth,
                                    K_colour=colour.K, colour_sequence=colour, progress=_progress(args))
    return _write_results(out, "register", {"title": f"3D registration: {source['label']}", **result}, args,
                          register.markdown_report, (register.plot_errors, "register_errors.png"),
                          "register_pairs.txt")
