"""Fixes from the issue-8 review: the CAPS loss masks and thresholds, and one pixel convention in code."""
import io
import tokenize
from pathlib import Path

import numpy as np
import pytest
import torch

import featlab
from featlab.conf import resolve_conf
from featlab.geometry.epipolar import fundamental_from_pose
from featlab.losses.caps import caps_loss_terms, default_conf, epipolar_line_valid

SIZE = (240, 320)  # (H, W) of both images; thresholds are fractions of the longer side, 320 px


def two_view(n=40, seed=0):
    """Random 3D points seen by two cameras -> p0, p1 (1, n, 2) exact correspondences, F (1, 3, 3)."""
    rng = np.random.default_rng(seed)
    K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    a = np.radians(6.0)
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    T[:3, 3] = [0.3, -0.05, 0.1]
    X0 = np.c_[rng.uniform(-1, 1, n), rng.uniform(-0.7, 0.7, n), rng.uniform(3, 6, n)]
    p0, p1 = X0 @ K.T, (X0 @ T[:3, :3].T + T[:3, 3]) @ K.T
    t = lambda x: torch.tensor(x, dtype=torch.float32)[None]  # noqa: E731
    F = fundamental_from_pose(t(K), t(K), t(T))
    return t(p0[:, :2] / p0[:, 2:]), t(p1[:, :2] / p1[:, 2:]), F


def line_normals(p0, F):
    """Unit normals (1, n, 2) of the epipolar lines F x0 in image 1: moving along them changes the error 1:1."""
    lines = torch.cat([p0, torch.ones_like(p0[..., :1])], -1) @ F.transpose(-1, -2)
    return torch.nn.functional.normalize(lines[..., :2], dim=-1)


def ground_truth_pred(p0, p1):
    """Predictions at the ground truth: on the epipolar lines, cycles back at the queries, std 4 px."""
    stds = torch.full(p0.shape[:2], 4.0)
    return {"coarse_points": p1.clone(), "fine_points": p1.clone(), "coarse_stds": stds, "fine_stds": stds.clone(),
            "cycle_coarse_points": p0.clone(), "cycle_fine_points": p0.clone()}


def terms(p0, pred, F, **conf):
    valid = epipolar_line_valid(p0, F, SIZE)
    assert valid.all()
    return caps_loss_terms(p0, pred, F, SIZE, SIZE, valid, resolve_conf(default_conf, conf, "loss"))


class TestCAPSLossMasks:
    def test_cycle_of_a_query_off_its_line_contributes_nothing(self):
        """Query 0's coarse match is 100 px off its epipolar line (> max_coarse_error 0.25 x 320 = 80 px): its
        coarse and fine cycle terms must not depend on where its cycles land; query 1 (on its line) must."""
        p0, p1, F = two_view()
        pred = ground_truth_pred(p0, p1)
        pred["coarse_points"][0, 0] += 100.0 * line_normals(p0, F)[0, 0]
        pred["cycle_coarse_points"] += 3.0  # every cycle misses by 3 * sqrt(2) px
        pred["cycle_fine_points"] += 3.0
        losses, masks = terms(p0, pred, F)
        assert masks["coarse_errors"][0, 0].item() == pytest.approx(100.0, abs=0.1)
        assert not masks["cycle_coarse"][0, 0] and not masks["cycle_fine"][0, 0] and not masks["fine"][0, 0]
        assert masks["coarse"][0, 0] and masks["cycle_coarse"][0, 1:].all()  # it still counts in the coarse term
        for key in ("cycle_coarse_points", "cycle_fine_points"):
            moved = {**pred, key: pred[key].clone()}
            moved[key][0, 0] += torch.tensor([37.0, -21.0])  # query 0: no effect
            torch.testing.assert_close(terms(p0, moved, F)[0], losses, rtol=0, atol=0)
            moved[key][0, 1] += torch.tensor([37.0, -21.0])  # query 1: its cycle term grows
            cycle = key.replace("_points", "")
            assert terms(p0, moved, F)[0][cycle] > losses[cycle] + 1e-3

    def test_loss_zero_at_ground_truth_and_grows_with_finite_gradients(self):
        p0, p1, F = two_view()
        losses, _ = terms(p0, ground_truth_pred(p0, p1), F)
        assert all(v.item() < 1e-4 for v in losses.values()), losses
        g = torch.Generator().manual_seed(0)
        previous = {k: v.item() for k, v in losses.items()}
        for scale in (1.0, 4.0, 16.0):
            pred = ground_truth_pred(p0, p1)
            for key in ("coarse_points", "fine_points", "cycle_coarse_points", "cycle_fine_points"):
                pred[key] = (pred[key] + scale * torch.randn(pred[key].shape, generator=g)).requires_grad_()
            losses, _ = terms(p0, pred, F)
            sum(losses.values()).backward()
            for k, v in losses.items():
                assert v.item() > previous[k], (k, scale)
                previous[k] = v.item()
            for key in ("coarse_points", "fine_points", "cycle_coarse_points", "cycle_fine_points"):
                assert torch.isfinite(pred[key].grad).all() and pred[key].grad.abs().sum() > 0

    def test_reference_thresholds(self):
        """max_epipolar_error, max_cycle_error and max_cycle_distance (x 320 px) drop a query from their terms."""
        p0, p1, F = two_view()
        pred = ground_truth_pred(p0, p1)
        normals = line_normals(p0, F)
        pred["coarse_points"][0, 0] += 40.0 * normals[0, 0]  # coarse error 40 px (0.125 x 320)
        pred["fine_points"][0, 1] += 10.0 * normals[0, 1]  # fine error 10 px (0.031 x 320)
        pred["cycle_coarse_points"][0, 2] += torch.tensor([0.0, 20.0])  # cycle distance 20 px (0.0625 x 320)
        _, off = terms(p0, pred, F)  # defaults: every threshold but max_coarse_error (80 px) off
        assert off["coarse"].all() and off["fine"].all() and off["cycle_coarse"].all() and off["cycle_fine"].all()
        _, on = terms(p0, pred, F, max_epipolar_error=0.1, max_cycle_error=0.02, max_cycle_distance=0.05)
        assert on["coarse"][0].tolist()[:3] == [False, True, True]  # coarse error 40 px > 32 px
        assert on["fine"][0].tolist()[:3] == [True, True, True]  # fine error 10 px < 32 px
        assert on["cycle_coarse"][0].tolist()[:3] == [False, True, False]  # 40 px > 6.4 px; distance 20 > 16 px
        assert on["cycle_fine"][0].tolist()[:3] == [True, False, True]  # fine error 10 px > 6.4 px
        assert on["coarse"][0, 3:].all() and on["cycle_coarse"][0, 3:].all() and on["cycle_fine"][0, 3:].all()


# ------------------------------------------------------------------------------------------------ pixels
def _pixel_shifts(source: str):
    """Lines of code (comments and strings excluded) that add or subtract the literal 0.5 (a pixel-convention
    shift such as ``x + 0.5`` or ``(i + 0.5) * s``; ``a + 0.5 * b`` and unary ``-0.5`` are not shifts). A line
    that does so for another reason says ``# not a pixel shift``."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    exempt = {t.start[0] for t in tokens if t.type == tokenize.COMMENT and "not a pixel shift" in t.string}
    tokens = [t for t in tokens
              if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)]
    found = []
    for i, t in enumerate(tokens):
        if t.type != tokenize.NUMBER or t.string not in ("0.5", ".5", "0.50") or i < 2:
            continue
        op, before = tokens[i - 1], tokens[i - 2]
        after = tokens[i + 1].string if i + 1 < len(tokens) else ""
        binary = before.type in (tokenize.NAME, tokenize.NUMBER) or before.string in (")", "]")
        if op.string in ("+", "-", "+=", "-=") and binary and after not in ("*", "/", "**") \
                and t.start[0] not in exempt:
            found.append(t.start[0])
    return found


def test_pixel_shifts_only_in_pixels_module():
    """featlab's one pixel convention: +-0.5 shifts are written once, in featlab/pixels.py (from_opencv...)."""
    root = Path(featlab.__file__).parent
    assert _pixel_shifts("x = (i + 0.5) * s\ny = p - 0.5\nz = a + 0.5 * b\nw = f(-0.5)\n"
                         "v = u - 0.5  # centred: not a pixel shift\n") == [1, 2]
    hits = [f"{path.relative_to(root)}:{line}" for path in sorted(root.rglob("*.py")) if path.name != "pixels.py"
            for line in _pixel_shifts(path.read_text())]
    assert not hits, f"use featlab.pixels (from_opencv / to_opencv / pixel_grid) instead of +-0.5 at {hits}"
