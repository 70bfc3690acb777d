"""``featlab extract``: keypoints and descriptors for every image of a folder, into an HDF5 file (hloc's layout).

Images are found recursively; each is stored under its path relative to the folder. The run is resumable: images
already in the output are skipped, and an interrupted run continues from ``<output>.partial`` (see
:mod:`featlab.io.h5`). Resuming checks the content that made the file (the resolved extractor config and the
SHA-256 of the weights files): a file written by another model, other weights (even under the same name) or
another config is refused and left as it is. The record is written beside the output as ``<output>.conf.yaml``.

Image size: without ``--resize``, an image whose longest side exceeds ``--max-size`` (default 1600, hloc's
``resize_max``) is extracted at that longest side, keypoints still in original-image pixels. residual-sift's peak
memory grows by ~550 bytes a pixel (peak RSS from ``getrusage`` around one ``extract_image`` call, one thread,
smoothed-noise 3:2 images: +0.41 GB at 1024x682, +1.57 GB at 2048x1365, +3.39 GB at 3072x2048), so a 6000x4000
photo at full size would need about 13 GB (extrapolated). ``--max-size 0`` extracts at full size; an image that
then does not fit in memory stops the run with a one-line error (the finished images stay in the partial file).

Examples:
    featlab extract images/ -o features.h5 --model sift --max-keypoints 4096
    featlab extract images/ -o features.h5 --model rootsift --resize 1024 --conf contrast_threshold=0.02
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError

logger = logging.getLogger(__name__)

#: longest side (px) above which images are extracted downscaled unless --resize is given (module docstring)
DEFAULT_MAX_SIZE = 1600


def register(sub):
    p = sub.add_parser("extract", help="extract features of a folder of images into an HDF5 file",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", type=Path, help="folder of images (searched recursively); for a depth model (e.g. "
                   "depthkp, sift-depth) a folder of 16-bit depth PNGs (in a 7-Scenes folder, its *.depth.png)")
    p.add_argument("--intrinsics", type=Path, default=None, metavar="FILE",
                   help="depth models: 3x3 K of the depth maps in featlab pixels (default: fx = fy = 585, principal "
                        "point at the centre, Kinect-style 640x480 depth as 7-Scenes)")
    p.add_argument("--depth-scale", type=float, default=None, metavar="M",
                   help="depth models: metres per depth unit (default: 0.001, millimetres; TUM RGB-D: 0.0002)")
    p.add_argument("-o", "--output", type=Path, required=True, help="features file to write (e.g. features.h5)")
    p.add_argument("--model", required=True, help="extractor name (see `featlab models`)")
    p.add_argument("--max-keypoints", type=int, default=None,
                   help="keep the K best keypoints per image (-1: all; default: the model's)")
    p.add_argument("--resize", type=int, nargs="+", default=None, metavar="N",
                   help="resize before extraction: one number = longest side, two = H W (keypoints are always "
                        "stored in original-image pixels)")
    p.add_argument("--max-size", type=int, default=DEFAULT_MAX_SIZE, metavar="N",
                   help=f"without --resize, extract images whose longest side exceeds N px at N px (default "
                        f"{DEFAULT_MAX_SIZE}, bounding memory; 0: always full size)")
    p.add_argument("--config", type=Path, default=None, help="YAML file with extractor settings")
    p.add_argument("--conf", nargs="+", default=[], metavar="KEY=VALUE",
                   help="extractor settings (override --config), e.g. --conf contrast_threshold=0.02")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--as-half", action="store_true", help="store descriptors and scores as float16 (hloc's as_half)")
    p.add_argument("--skip-bad", action="store_true",
                   help="warn about unreadable images and continue (default: stop with an error)")
    p.add_argument("--overwrite", action="store_true",
                   help="start from scratch instead of resuming (the old output is replaced at the end)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="extract only shard I of N (0 <= I < N): "
                        "a block of the sorted images; `featlab merge` joins the shard files (docs/SCALING.md)")
    p.set_defaults(func=run)


def extractor_settings(args) -> dict:
    """The extractor config section from --config, --conf, --max-keypoints and --resize (later wins)."""
    from ..conf import load_yaml_with_overrides

    conf = load_yaml_with_overrides(args.config, args.conf)
    if args.max_keypoints is not None:
        conf["max_keypoints"] = args.max_keypoints
    if args.resize is not None:
        if len(args.resize) not in (1, 2) or min(args.resize) < 1:
            raise ConfigError(f"--resize takes one positive number (longest side) or two (H W), got {args.resize}")
        conf["resize"] = args.resize[0] if len(args.resize) == 1 else list(args.resize)
    return conf


def _device(name: str):
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"bad --device '{name}': {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps requested but MPS is not available")
    return device


def bounded_resize(image_shape, resize, max_size: int | None):
    """The resize to extract an image (H, W, ...) with: ``resize`` when set, else ``max_size`` (longest side) when
    the image is larger, else None (full size). ``max_size`` None or 0: no bound."""
    if resize is not None or not max_size:
        return resize
    return int(max_size) if max(image_shape[:2]) > max_size else None


def _out_of_memory(e: BaseException) -> bool:
    """A failed allocation (torch, OpenCV or numpy), as opposed to a bug."""
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return any(s in text for s in ("can't allocate memory", "out of memory", "Insufficient memory",
                                   "Failed to allocate"))


def _resize_scale(image_shape, resize) -> float | None:
    """Mean factor original/resized pixel size (hloc's keypoint ``uncertainty``), None without resizing."""
    if resize is None:
        return None
    h, w = image_shape[:2]
    if isinstance(resize, (int, float)):
        return max(h, w) / float(resize)
    rh, rw = resize
    return 0.5 * (w / rw + h / rh)


def run(args) -> int:
    from tqdm import tqdm

    from ..conf import save_conf
    from ..extractors import build_extractor, extract_image
    from ..extractors.base import extractor_identity
    from ..io.h5 import check_output_record, list_feature_names, partial_path, staged_h5, write_features
    from ..io.image import list_images, read_image

    images_dir: Path = args.images
    output: Path = args.output
    if output.exists() and output.is_dir():
        raise InputError(f"output {output} is a folder; give a file name such as features.h5")
    files = list_images(images_dir)  # InputError on a missing/empty folder
    names = [f.relative_to(images_dir).as_posix() for f in files]

    extractor = build_extractor(args.model, extractor_settings(args))  # ConfigError: unknown model / key
    extractor = extractor.to(_device(args.device))
    depth_input = None
    if getattr(extractor, "inputs", "image") == "depth":  # 16-bit depth PNGs and K instead of images
        from ..io.depth import DEFAULT_DEPTH_SCALE, DepthFolderInput

        depth_input = DepthFolderInput(args.intrinsics,
                                       DEFAULT_DEPTH_SCALE if args.depth_scale is None else args.depth_scale)
        files = depth_input.list_files(images_dir)
        names = [f.relative_to(images_dir).as_posix() for f in files]
    elif args.intrinsics is not None or args.depth_scale is not None:
        raise ConfigError(f"--intrinsics and --depth-scale apply to depth models only; '{args.model}' takes images")
    # content, not names: the resolved config of the extractor and of those inside it, and the SHA-256 of every
    # weights file, so that a resume never mixes two models, two versions of one weights file or two configs
    max_size = getattr(args, "max_size", DEFAULT_MAX_SIZE)
    if max_size is not None and max_size < 0:
        raise ConfigError(f"--max-size must be >= 0 (0: no bound), got {max_size}")
    record = {"kind": "features", "model": args.model, "extractor": extractor_identity(extractor),
              "as_half": bool(args.as_half), "max_size": int(max_size or 0)}
    if depth_input is not None:
        record.update(depth_input.record())  # depth scale and K decide the features too
    from ..io.shards import select_shard
    names, files = select_shard(args.shard, record, names, files)  # --shard I/N: one block of the sorted images
    resize = record["extractor"]["conf"].get("resize")

    # fast path: a complete output with everything in it
    if output.exists() and not args.overwrite and not partial_path(output).exists():
        check_output_record(output, record)
        done = set(list_feature_names(output))
        if all(n in done for n in names):
            print(f"{output}: all {len(names)} images already extracted, nothing to do")
            return 0

    counts = {"new": 0, "present": 0, "bad": 0, "bounded": 0, "keypoints": []}
    with staged_h5(output, record, kind="features", overwrite=args.overwrite) as f:
        done = set(list_feature_names(f))
        todo = [(p, n) for p, n in zip(files, names) if n not in done]
        counts["present"] = len(names) - len(todo)
        for path, name in tqdm(todo, desc=f"extract {args.model}", unit="img", disable=None, file=sys.stderr):
            try:
                image = depth_input.read(path) if depth_input else read_image(path)
            except InputError as e:
                if not args.skip_bad:
                    raise InputError(f"{e} (use --skip-bad to skip unreadable images)") from None
                logger.warning("skipping %s", e)
                counts["bad"] += 1
                continue
            size = bounded_resize(image.shape, resize, 0 if depth_input else max_size)
            counts["bounded"] += size is not None and size != resize
            try:
                pred = depth_input.extract(extractor, image) if depth_input else \
                    extract_image(extractor, image, resize=size)
            except Exception as e:  # noqa: BLE001 - torch, OpenCV and numpy each have their own error types
                if not _out_of_memory(e):
                    raise
                h, w = image.shape[:2]
                raise InputError(f"not enough memory to extract {name} ({w}x{h}) with {args.model}: extract it "
                                 f"smaller (--max-size {DEFAULT_MAX_SIZE} or --resize N)") from None
            write_features(f, name, pred, as_half=args.as_half, uncertainty=_resize_scale(image.shape, size))
            f.flush()
            counts["new"] += 1
            counts["keypoints"].append(len(pred["keypoints"]))
        total = len(list_feature_names(f))
        # inside the staged block: if this fails (disk full), the output is not renamed and the run can resume
        save_conf({**record, "images": str(images_dir)}, output.with_name(output.name + ".conf.yaml"))

    kp = np.array(counts["keypoints"])
    stats = (f"; keypoints per new image: mean {kp.mean():.0f}, min {kp.min()}, max {kp.max()}" if kp.size else "")
    bad = f", {counts['bad']} unreadable skipped" if counts["bad"] else ""
    print(f"{output}: {total} images ({counts['new']} new, {counts['present']} already present{bad}){stats}")
    if counts["bounded"]:
        print(f"note: {counts['bounded']} image(s) larger than {max_size} px were extracted at {max_size} px "
              "(longest side; keypoints in original pixels; --max-size 0 for full size)")
    if kp.size and kp.min() == 0:
        print(f"note: {int((kp == 0).sum())} image(s) gave no keypoints (stored with zero keypoints)")
    return 0
