"""Residual descriptor (Shrestha, Chhatkuli, Kanakis, Van Gool): handcrafted + learned residual.

A handcrafted extractor g (SIFT, RootSIFT, upright RootSIFT, SURF; not trained) gives the keypoints and a 128-d
descriptor per keypoint. Two learned parts add to it:

- h, a trimmed SuperPoint (:class:`featlab.nn.TrimmedSuperPoint`) on the RGB image: a dense 128-d map at stride 8,
  sampled bilinearly at g's keypoints with :func:`featlab.pixels.sample_map`;
- f, an MLP 128 -> 256 -> 256 -> 128 (ReLU) applied to g's descriptor.

Final descriptor: ``L2-normalise(fuse(f(g), h))`` with ``fuse`` = concat (256-d, default), sum or product (128-d).
Without fusion (``fusion: none``, the paper's ablation) the descriptor is h alone (256-d head) at g's keypoints.
Neither h nor f is normalised before fusion: their relative scale is learned. Initialisation (a featlab choice,
the paper does not say): h's output layer starts at (or, for concat, very near) the identity element of the
fusion, so training starts from normalise(f(g)), which matches as well as g, and h is learned as a residual; with a
standard init h dominates, all descriptors start nearly equal and the triplet loss collapses (measured). See
:meth:`ResidualDescriptorNet._init_residual`. ``fusion: none`` keeps the standard init (no g to start from).

Weights: a ``.safetensors`` file plus a JSON sidecar (same stem, ``.json``) holding the model config and the
handcrafted extractor it was trained with (:func:`save_residual_weights`). The extractors registered here
(``residual-sift``, ``residual-rootsift``, ...) load ``featlab/weights/<name>.safetensors`` by default (conf key
``weights``: a path or the name of a shipped file); these files are made by ``featlab train residual ...
--export <name>``.

Backends: ``torch`` (``dtype: bfloat16`` + ``channels_last: true`` run the CNN under bf16 autocast; descriptors
are float32 either way) or ``onnx`` (the network exported with :func:`export_onnx` and run by onnxruntime).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..conf import checked, none_or, resolve_conf, to_container
from ..errors import ConfigError, InputError
from ..io.atomic import atomic_path
from ..io.weights import (SHIPPED_WEIGHTS_DIR, load_state_strict, load_weights,  # noqa: F401
                          resolve_weights_path, save_weights, sidecar_path)
from ..nn import MLP, TrimmedSuperPoint, fold_batchnorm, pad_to_multiple
from ..pixels import sample_map
from .base import Extractor, build_extractor, register_extractor

#: shipped weights: featlab/weights/<name>.safetensors + <name>.json
WEIGHTS_DIR = SHIPPED_WEIGHTS_DIR
FORMAT = "featlab-residual/1"
FUSIONS = ("concat", "sum", "product", "none")


class ResidualDescriptorNet(nn.Module):
    """The trainable part: h (CNN) and f (MLP) and their fusion. g's outputs are inputs (constants).

    Config (:attr:`default_conf`): see the comments per key.
    """

    default_conf = {
        "backbone": "full",  # h: full (8 encoder convs) | small (4 encoder convs), see featlab.nn.superpoint
        "batchnorm": False,  # BatchNorm after each conv of h except the last
        "fusion": "concat",  # concat | sum | product | none (none: descriptor from h alone)
        "h_dim": none_or(int),  # channels of h's map; null: 128, or 256 with fusion none
        "g_dim": 128,  # dimension of the handcrafted descriptor (SIFT/RootSIFT/SURF-extended: 128)
        "f_dims": [256, 256, 128],  # widths of f's layers after its input (g_dim); last = output dim
        # L2-normalise f(g) and h separately before the fusion, so that both parts always carry equal weight.
        # Without it (the original design) h can be switched off by training: after 2500 GPU steps of concat
        # fusion from the small-h initialisation, |h| = 0.002 against |f(g)| = 0.66 at the keypoints and the
        # model was f(g) alone (measured on the validation warps, see docs/MODELS.md)
        "part_norm": False,
    }

    def __init__(self, conf=None):
        super().__init__()
        self.conf = conf = resolve_conf(self.default_conf, conf, "model")
        if conf.fusion not in FUSIONS:
            raise ConfigError(f"model.fusion must be one of {FUSIONS}, got {conf.fusion!r}")
        h_dim = conf.h_dim if conf.h_dim is not None else (256 if conf.fusion == "none" else 128)
        f_out = int(conf.f_dims[-1])
        if conf.fusion in ("sum", "product") and f_out != h_dim:
            raise ConfigError(f"model.fusion={conf.fusion} needs f's output ({f_out}) == h_dim ({h_dim})")
        self.h = TrimmedSuperPoint(descriptor_dim=h_dim, variant=conf.backbone, batchnorm=conf.batchnorm)
        self.f = MLP([conf.g_dim, *conf.f_dims]) if conf.fusion != "none" else None
        if conf.fusion != "none":
            self._init_residual(conf.fusion)
        self.out_dim = {"concat": f_out + h_dim, "none": h_dim}.get(conf.fusion, h_dim)
        #: autocast dtype for h (None: float32); set by :meth:`set_compute`
        self.amp_dtype: torch.dtype | None = None

    #: scale of h's output layer at initialisation for concat fusion (see _init_residual)
    CONCAT_INIT_SCALE = 0.01

    def _init_residual(self, fusion: str) -> None:
        """Start training from the handcrafted descriptor, with h as a residual that grows from (almost) nothing.

        With the standard init h's map is ~15x larger than f(g): all initial descriptors are nearly equal (MMA@3
        0.11 vs 0.57 for g on synthetic warps) and the triplet loss collapses (measured). So h's output layer starts
        at (or near) the identity element of the fusion: weight 0 and bias 1 for product, weight 0 and bias 0 for
        sum, and for concat a *small random* weight (``CONCAT_INIT_SCALE`` x the default init): an exactly-zero h
        in its own dimensions of the concatenation is a stationary point of any distance-based loss (its gradient
        is exactly zero), so h would never train.
        """
        last = self.h.head[-1]
        nn.init.zeros_(last.bias)
        if fusion == "concat":
            with torch.no_grad():
                last.weight.mul_(self.CONCAT_INIT_SCALE)
        else:
            nn.init.zeros_(last.weight)
            if fusion == "product":
                nn.init.ones_(last.bias)

    def set_compute(self, dtype: str = "float32", channels_last: bool = False) -> "ResidualDescriptorNet":
        """Choose the CNN's compute: ``dtype`` float32 | bfloat16 (autocast), channels_last memory format."""
        if dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"dtype must be float32 or bfloat16, got {dtype!r}")
        self.amp_dtype = torch.bfloat16 if dtype == "bfloat16" else None
        self.h.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        return self

    @property
    def channels_last(self) -> bool:
        w = self.h.encoder[0].weight  # a 3x3 conv: 1x1 kernels are contiguous in both formats
        return w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()

    def dense(self, image: torch.Tensor) -> torch.Tensor:
        """h on an image: (B, 3, H, W) in [0, 1], H and W multiples of 8 -> (B, h_dim, H/8, W/8) float32."""
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=image.device.type, dtype=self.amp_dtype or torch.bfloat16,
                            enabled=self.amp_dtype is not None):
            out = self.h(image)
        return out.float()

    def forward(self, image: torch.Tensor, keypoints: torch.Tensor, g_descriptors: torch.Tensor) -> torch.Tensor:
        """Fused descriptors at g's keypoints.

        Args:
            image: (B, 3, H, W) float in [0, 1] (zero-padded here to multiples of 8; under ONNX export the input
                must already be padded).
            keypoints: (B, N, 2) featlab pixels (g's keypoints).
            g_descriptors: (B, N, g_dim) handcrafted descriptors (constants: no gradient flows into g).
        Returns:
            (B, N, out_dim) float32, L2-normalised.
        """
        if torch.onnx.is_in_onnx_export():
            # the input is pre-padded; its (W, H) as a tensor keeps the sizes dynamic in the graph
            image_size = torch._shape_as_tensor(image)[2:].flip(0)
        else:
            image = pad_to_multiple(image)  # bottom/right: keypoint coordinates are unchanged
            image_size = (image.shape[-2], image.shape[-1])
        dense = self.dense(image)  # covers the padded image exactly (stride 8)
        with torch.autocast(device_type=image.device.type, enabled=False):
            h_desc = sample_map(dense, keypoints.float(), image_size)
            if self.f is None:
                fused = h_desc
            else:
                f_desc = self.f(g_descriptors.float())
                if self.conf.part_norm:
                    f_desc, h_desc = F.normalize(f_desc, dim=-1), F.normalize(h_desc, dim=-1)
                if self.conf.fusion == "concat":
                    fused = torch.cat([f_desc, h_desc], -1)
                elif self.conf.fusion == "sum":
                    fused = f_desc + h_desc
                else:
                    fused = f_desc * h_desc
            return F.normalize(fused, dim=-1)


# ------------------------------------------------------------------------------------------------ weights I/O
def save_residual_weights(net: ResidualDescriptorNet, path: str | Path, handcrafted: dict,
                          extra: dict | None = None) -> Path:
    """Write ``net``'s weights (safetensors) and the JSON sidecar, both atomically.

    Args:
        net: the trained network.
        path: ``*.safetensors`` destination; the sidecar goes to the same stem with ``.json``.
        handcrafted: ``{"name": g's registered name, "conf": g's config (dict)}`` used in training.
        extra: anything else to record (training step, validation metrics...).
    """
    return save_weights(net, path, {"format": FORMAT, "model": to_container(net.conf), "handcrafted": handcrafted,
                                    **(extra or {})})


def load_residual_weights(path: str | Path) -> tuple[ResidualDescriptorNet, dict]:
    """Read weights + sidecar written by :func:`save_residual_weights` -> (network in eval mode, sidecar dict).

    Raises:
        InputError: missing/corrupt file or sidecar, or weights that do not fit the sidecar's model.
    """
    state, meta = load_weights(path, FORMAT, "residual-descriptor weights")
    return load_state_strict(ResidualDescriptorNet(meta["model"]), state, path), meta


# ------------------------------------------------------------------------------------------------------ ONNX
class _OnnxWrapper(nn.Module):
    def __init__(self, net: ResidualDescriptorNet):
        super().__init__()
        self.net = net

    def forward(self, image, keypoints, g_descriptors):
        return self.net(image, keypoints, g_descriptors)


def export_onnx(net: ResidualDescriptorNet, path: str | Path, opset: int = 17) -> Path:
    """Export h + f + fusion to ONNX (float32; dynamic batch, H, W and keypoint count).

    Graph inputs: ``image`` float32 (B, 3, H, W) with H, W multiples of 8 (pad with
    :func:`featlab.nn.pad_to_multiple`), ``keypoints`` (B, N, 2) featlab pixels, ``g_descriptors`` (B, N, g_dim).
    Output: ``descriptors`` (B, N, out_dim), L2-normalised.
    """
    import copy
    import warnings

    path = Path(path)
    model = copy.deepcopy(net).float().eval()
    model.set_compute("float32", channels_last=False)
    args = (torch.rand(1, 3, 64, 64), torch.rand(1, 16, 2) * 64, torch.rand(1, 16, net.conf.g_dim))
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice (the dynamo one needs onnxscript)
        torch.onnx.export(
            _OnnxWrapper(model), args, str(tmp), dynamo=False, opset_version=opset,
            input_names=["image", "keypoints", "g_descriptors"], output_names=["descriptors"],
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "keypoints": {0: "batch", 1: "num"},
                          "g_descriptors": {0: "batch", 1: "num"}, "descriptors": {0: "batch", 1: "num"}})
    return path


class OnnxResidualRunner:
    """onnxruntime session of a graph written by :func:`export_onnx`; same call as :class:`ResidualDescriptorNet`."""

    def __init__(self, path: str | Path, num_threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(num_threads or torch.get_num_threads())
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise InputError(f"cannot load ONNX model {path}: {e}") from None

    def __call__(self, image: torch.Tensor, keypoints: torch.Tensor, g_descriptors: torch.Tensor) -> torch.Tensor:
        image = pad_to_multiple(image.float())
        out = self.session.run(None, {
            "image": image.cpu().numpy(),
            "keypoints": keypoints.float().cpu().numpy(),
            "g_descriptors": g_descriptors.float().cpu().numpy()})[0]
        return torch.from_numpy(out).to(image.device)


# ------------------------------------------------------------------------------------------------- extractor
#: registered variants: name -> (handcrafted extractor g, model config keys that its weights must have)
VARIANTS = {
    # the first shipped residual-sift (issue 9 replaced it: featlab.extractors.patch_residual)
    "residual-sift-v1": ("sift", {}),
    # the published recipe as trained here (f and h jointly, plain concat): see docs/MODELS.md for why
    # residual-sift-v1 is not this one
    "residual-sift-joint": ("sift", {}),
    "residual-rootsift": ("rootsift", {}),
    "residual-rootsift-upright": ("rootsift-upright", {}),
    "residual-surf": ("surf", {}),
    "residual-surf-upright": ("surf-upright", {}),
    "residual-sift-nofusion": ("sift", {"fusion": "none"}),
    "residual-sift-small": ("sift", {"backbone": "small"}),
    "residual-sift-sum": ("sift", {"fusion": "sum"}),
    "residual-sift-product": ("sift", {"fusion": "product"}),
}


def variant_mismatch(name: str, g_name: str, model_conf: dict) -> str | None:
    """Why weights (trained with g ``g_name`` and ``model_conf``) do not fit the registered variant ``name``."""
    if name not in VARIANTS:
        return None
    want_g, want_model = VARIANTS[name]
    if g_name != want_g:
        return f"{name} uses handcrafted={want_g!r}, the weights were trained with {g_name!r}"
    defaults = ResidualDescriptorNet.default_conf
    for key in ("backbone", "fusion"):
        want = want_model.get(key, defaults[key])
        if model_conf.get(key, defaults[key]) != want:
            return f"{name} has model.{key}={want!r}, the weights have {model_conf.get(key)!r}"
    return None


def train_hint(name: str) -> str:
    g_name, model = VARIANTS.get(name, ("sift", {}))
    overrides = " ".join([f"handcrafted.name={g_name}"] * (g_name != "sift") + [f"model.{k}={v}" for k, v in
                                                                                model.items()])
    return (f"featlab train residual --photos PHOTO_DIR --val-photos VAL_DIR -o runs/{name}"
            f"{' ' + overrides if overrides else ''} --export {name}")



def build_trained_g(meta: dict, path, conf, g_dim: int) -> Extractor:
    """The handcrafted g that weights were trained with (their sidecar ``meta``), with the user's overrides.

    Refuses (ConfigError) weights trained with another g than ``conf.handcrafted`` or with another descriptor size;
    g's own ``max_keypoints`` is replaced by the extractor's.
    """
    trained_g = meta.get("handcrafted", {})
    if trained_g.get("name") != conf.handcrafted:
        raise ConfigError(f"weights {Path(path).name} were trained with handcrafted={trained_g.get('name')!r}, "
                          f"but this extractor uses handcrafted={conf.handcrafted!r}")
    g_conf = {k: v for k, v in (trained_g.get("conf") or {}).items() if k != "max_keypoints"}
    g_conf.update(to_container(conf.handcrafted_conf) or {})
    g_conf["max_keypoints"] = conf.max_keypoints
    g = build_extractor(conf.handcrafted, g_conf)
    if g.descriptor_dim != int(g_dim):
        raise ConfigError(f"{conf.handcrafted} gives {g.descriptor_dim}-d descriptors, the weights expect {g_dim}-d")
    return g

class ResidualDescriptor(Extractor):
    """g's keypoints, descriptor = normalise(fuse(f(g), h)): handcrafted + learned residual."""

    needs_rgb = True
    default_conf = {
        "handcrafted": "sift",  # g: registered handcrafted extractor; must match the weights' sidecar
        "handcrafted_conf": none_or(dict),  # overrides of g's config (default: the config it was trained with)
        "weights": none_or(str, Path),  # .safetensors path, or the name of a file in featlab/weights/ (presets:
        # their own name)
        "backend": checked("torch", choices=("torch", "onnx")),  # onnx: onnxruntime, float32
        "onnx_path": none_or(str, Path),  # ONNX file for backend onnx; null: export the loaded weights to a temp file
        # channels_last also in float32: measured 25% faster inference at 480x640 on the 2-core AVX2 CPU
        # (566 vs 761 ms, before BatchNorm folding;
        # docs/results/RESULTS-before-issue8.md), same descriptors to float rounding
        "channels_last": True,
    }

    def _init(self, conf):
        if not conf.weights:
            raise ConfigError("the residual descriptor needs a 'weights' file (e.g. weights=run/best.safetensors)")
        path = resolve_weights_path(conf.weights, WEIGHTS_DIR)
        if not path.is_file():
            if path.parent == WEIGHTS_DIR:
                raise InputError(f"residual-descriptor weights not found: {path}; train them with "
                                 f"`{train_hint(path.stem)}`, or set weights=PATH.safetensors")
            raise InputError(f"residual-descriptor weights not found: {path}")
        self.weights_path = path
        net, meta = load_residual_weights(path)
        self.g = build_trained_g(meta, path, conf, net.conf.g_dim)
        net = fold_batchnorm(net)  # built for inference only (training uses ResidualDescriptorNet itself)
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net.set_compute(conf.dtype, conf.channels_last)
        self.meta = meta
        self._onnx = None
        if conf.backend == "onnx":
            onnx_path = conf.onnx_path
            if onnx_path is None:
                self._tmpdir = tempfile.TemporaryDirectory(prefix="featlab-residual-onnx-")
                onnx_path = export_onnx(net, Path(self._tmpdir.name) / f"{path.stem}.onnx")
            self._onnx = OnnxResidualRunner(onnx_path)

    @property
    def descriptor_dim(self) -> int:
        return self.net.out_dim

    def weights_files(self) -> list[Path]:
        """The weights, their sidecar and, with ``backend: onnx`` and an ``onnx_path``, the graph that runs."""
        return super().weights_files() + ([Path(self.conf.onnx_path)] if self._onnx is not None
                                          and self.conf.onnx_path is not None else [])

    @torch.no_grad()
    def _forward(self, data):
        image = data["image"]
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        pred = dict(self.g({"image": image}))
        kpts, g_desc = pred["keypoints"], pred["descriptors"]
        b, n = kpts.shape[:2]
        if n == 0:
            desc = g_desc.new_zeros((b, 0, self.descriptor_dim), dtype=torch.float32)
        elif self._onnx is not None:
            desc = self._onnx(image, kpts, g_desc)
        else:
            desc = self.net(image.float(), kpts, g_desc)
        if "keypoint_masks" in pred:
            desc = desc * pred["keypoint_masks"][..., None]
        pred["descriptors"] = desc.float()
        return pred


def _summary(name: str) -> str:
    g_name, model = VARIANTS[name]
    fusion, backbone = model.get("fusion", "concat"), model.get("backbone", "full")
    if fusion == "none":
        what = "learned descriptor only (no-fusion ablation), 256-d"
    else:
        what = f"{g_name} + learned residual ({fusion}), {256 if fusion == 'concat' else 128}-d"
    small = ", small CNN" if backbone == "small" else ""
    return f"{g_name} keypoints; {what}{small} (weights featlab/weights/{name}.safetensors)"


def _register():
    for name, (g_name, _) in VARIANTS.items():
        register_extractor(name, preset={"handcrafted": g_name, "weights": name}, summary=_summary(name))(
            ResidualDescriptor)


_register()


def available_weights() -> dict[str, Path]:
    """Registered residual variants whose shipped weights exist."""
    return {n: WEIGHTS_DIR / f"{n}.safetensors" for n in VARIANTS
            if (WEIGHTS_DIR / f"{n}.safetensors").is_file()}


__all__ = ["ResidualDescriptorNet", "ResidualDescriptor", "save_residual_weights", "load_residual_weights",
           "export_onnx", "OnnxResidualRunner", "resolve_weights_path"]
