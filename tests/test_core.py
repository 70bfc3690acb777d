"""Pixel convention, config handling, image reading and atomic writes."""
import numpy as np
import pytest
import torch

from featlab import pixels
from featlab.conf import load_yaml_with_overrides, none_or, parse_overrides, resolve_conf, save_conf
from featlab.errors import ConfigError, InputError
from featlab.io.atomic import atomic_path
from featlab.io.image import list_images, read_image, resize_image


class TestPixels:
    def test_opencv_round_trip(self):
        p = np.array([[0.0, 0.0], [10.25, 3.5]])
        np.testing.assert_allclose(pixels.to_opencv(pixels.from_opencv(p)), p)
        np.testing.assert_allclose(pixels.from_opencv(p)[0], [0.5, 0.5])

    def test_homography_conversion_consistent(self):
        rng = np.random.default_rng(0)
        H_cv = np.eye(3) + 0.01 * rng.normal(size=(3, 3))
        H_cv[2, :2] *= 0.01
        p_cv = rng.uniform(0, 100, (10, 2))
        q_cv = np.c_[p_cv, np.ones(10)] @ H_cv.T
        q_cv = q_cv[:, :2] / q_cv[:, 2:]
        H = pixels.homography_from_opencv(H_cv)
        q = np.c_[pixels.from_opencv(p_cv), np.ones(10)] @ H.T
        np.testing.assert_allclose(q[:, :2] / q[:, 2:], pixels.from_opencv(q_cv), atol=1e-9)
        np.testing.assert_allclose(pixels.homography_to_opencv(H), H_cv, atol=1e-12)

    def test_sample_map_hits_cell_centres(self):
        # a stride-4 map of a 16x32 image: cell (i, j) centre is at featlab ((j + .5) * 4, (i + .5) * 4)
        fmap = torch.arange(4 * 8, dtype=torch.float32).reshape(1, 1, 4, 8)
        centres = pixels.pixel_grid(4, 8, stride=4.0)[None]
        out = pixels.sample_map(fmap, centres, (16, 32))
        np.testing.assert_allclose(out[0, :, 0].numpy(), np.arange(32), atol=1e-5)
        # half-way between two horizontal neighbours: the mean
        mid = centres[:, :1] + torch.tensor([2.0, 0.0])
        assert pixels.sample_map(fmap, mid, (16, 32)).item() == pytest.approx(0.5)

    def test_grid_indices_and_inside(self):
        ij = torch.tensor([[0, 0], [2, 3]])
        np.testing.assert_allclose(pixels.from_grid_indices(ij, 8).numpy(), [[4, 4], [28, 20]])
        m = pixels.inside_image(torch.tensor([[0.1, 0.1], [10.0, 5.0], [10.1, 1.0]]), (5, 10))
        assert m.tolist() == [True, True, False]

    def test_warp_image_grid_identity(self):
        img = torch.rand(1, 3, 6, 7)
        grid = pixels.pixel_grid(6, 7).reshape(1, 6, 7, 2)
        torch.testing.assert_close(pixels.warp_image_grid(img, grid), img, atol=1e-5, rtol=0)


class TestConf:
    defaults = {"a": 1, "b": {"c": 2.0, "d": "x"}, "e": none_or(list)}

    def test_merge(self):
        conf = resolve_conf(self.defaults, {"b": {"c": 3.0}, "e": [1, 2]})
        assert conf.a == 1 and conf.b.c == 3.0 and conf.b.d == "x" and list(conf.e) == [1, 2]

    @pytest.mark.parametrize("user", [{"z": 1}, {"b": {"cc": 1}}])
    def test_unknown_key(self, user):
        with pytest.raises(ConfigError, match="unknown config key"):
            resolve_conf(self.defaults, user, "thing")

    def test_bad_type(self):
        with pytest.raises(ConfigError):
            resolve_conf(self.defaults, {"a": "not-an-int"})

    @pytest.mark.parametrize("types,good,bad", [((float,), [0.8, 1], ["0.8", True, [0.8]]),
                                                ((int, list), [640, [480, 640], (480, 640)], [640.0, "640", {}]),
                                                ((dict,), [{"x": 1}, {}], [[1], "x"]),
                                                ((bool,), [True, False], [1, "true"])])
    def test_typed_none_default(self, types, good, bad):
        defaults = {"k": none_or(*types), "n": {"k": none_or(*types)}}
        assert resolve_conf(defaults).k is None and resolve_conf(defaults).n.k is None
        for value in good + [None]:
            conf = resolve_conf(defaults, {"k": value, "n": {"k": value}})
            assert conf.k == value and conf.n.k == value
        for value in bad:
            for user, key in (({"k": value}, "thing.k"), ({"n": {"k": value}}, "thing.n.k")):
                with pytest.raises(ConfigError, match=f"bad value for '{key}': expected .* or null") as err:
                    resolve_conf(defaults, user, "thing")
                assert "\n" not in str(err.value)

    def test_typed_none_in_a_component(self, tmp_path, capsys):
        from featlab.cli import main
        from featlab.extractors import build_extractor

        assert build_extractor("sift", {"resize": 640}).conf.resize == 640
        assert build_extractor("sift", {"resize": None}).conf.resize is None
        with pytest.raises(ConfigError, match="resize"):
            build_extractor("sift", {"resize": "640"})
        # through the CLI: one line on stderr, exit 2, nothing written
        capsys.readouterr()
        assert main(["train", "caps", "-o", str(tmp_path / "run"), "--data", str(tmp_path),
                     "train.max_minutes=soon"]) == 2
        err = capsys.readouterr().err.strip()
        assert "train.max_minutes" in err and "\n" not in err and not (tmp_path / "run").exists()

    def test_every_none_default_declares_its_types(self):
        """A bare None default accepts any value: every default_conf in featlab uses none_or instead."""
        import importlib
        import inspect
        import pkgutil

        import featlab

        def bare_none(conf, where):
            for key, value in conf.items():
                if value is None:
                    yield f"{where}.{key}"
                elif isinstance(value, dict):
                    yield from bare_none(value, f"{where}.{key}")

        found, checked = [], 0
        for info in pkgutil.walk_packages(featlab.__path__, "featlab."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for name, obj in vars(module).items():
                confs = []
                if isinstance(obj, dict) and (name.endswith("default_conf") or name == "COMMON_CONF"):
                    confs.append((f"{info.name}.{name}", obj))
                elif inspect.isclass(obj) and isinstance(getattr(obj, "default_conf", None), dict):
                    confs.append((f"{obj.__module__}.{obj.__name__}.default_conf", obj.default_conf))
                for where, conf in confs:
                    checked += 1
                    found.extend(bare_none(conf, where))
        assert checked > 20
        assert not found, f"None defaults without declared types (use featlab.conf.none_or): {sorted(set(found))}"

    def test_overrides_and_yaml(self, tmp_path):
        assert parse_overrides(["a=3", "b.c=0.5"]) == {"a": 3, "b": {"c": 0.5}}
        with pytest.raises(ConfigError, match="key=value"):
            parse_overrides(["oops"])
        y = tmp_path / "c.yaml"
        y.write_text("a: 5\nb:\n  d: zz\n")
        merged = load_yaml_with_overrides(y, ["b.c=9.0"])
        assert merged == {"a": 5, "b": {"d": "zz", "c": 9.0}}
        with pytest.raises(ConfigError, match="not found"):
            load_yaml_with_overrides(tmp_path / "missing.yaml")
        save_conf(resolve_conf(self.defaults, merged), tmp_path / "out.yaml")
        assert "d: zz" in (tmp_path / "out.yaml").read_text()


class TestImages:
    def _write(self, path, arr):
        import cv2

        assert cv2.imwrite(str(path), arr)
        return path

    def test_modes(self, tmp_path):
        gray = self._write(tmp_path / "g.png", np.full((20, 30), 100, np.uint8))
        g16 = self._write(tmp_path / "g16.png", np.full((20, 30), 65535, np.uint16))
        rgba = self._write(tmp_path / "a.png", np.full((20, 30, 4), 50, np.uint8))
        for p in (gray, g16, rgba):
            img = read_image(p)
            assert img.shape == (20, 30, 3) and img.dtype == np.uint8
        assert read_image(g16).max() == 255

    def test_bgr_to_rgb(self, tmp_path):
        bgr = np.zeros((10, 10, 3), np.uint8)
        bgr[..., 0] = 255  # blue in OpenCV's order
        img = read_image(self._write(tmp_path / "b.png", bgr))
        assert img[0, 0].tolist() == [0, 0, 255]

    def test_errors(self, tmp_path):
        with pytest.raises(InputError, match="not found"):
            read_image(tmp_path / "nope.jpg")
        (tmp_path / "bad.jpg").write_bytes(b"\x00garbage" * 10)
        with pytest.raises(InputError, match="corrupt"):
            read_image(tmp_path / "bad.jpg")
        (tmp_path / "empty.png").write_bytes(b"")
        with pytest.raises(InputError, match="empty"):
            read_image(tmp_path / "empty.png")
        tiny = self._write(tmp_path / "tiny.png", np.zeros((2, 2), np.uint8))
        with pytest.raises(InputError, match="too small"):
            read_image(tiny)
        (tmp_path / "sub").mkdir()
        with pytest.raises(InputError, match="no images"):
            list_images(tmp_path / "sub")
        with pytest.raises(InputError, match="not found"):
            list_images(tmp_path / "missing")

    def test_resize_scale_maps_back(self):
        img = np.zeros((480, 640, 3), np.uint8)
        small, scale = resize_image(img, [240, 320])
        assert small.shape == (240, 320, 3) and scale == (2.0, 2.0)
        small, scale = resize_image(img, 320)
        assert small.shape == (240, 320, 3)
        # the image extent maps onto the image extent in this pixel convention
        np.testing.assert_allclose(pixels.scale_points(np.array([[320.0, 240.0]]), scale), [[640, 480]])


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done" and len(list(tmp_path.iterdir())) == 1


class TestWeightsExport:
    @pytest.mark.parametrize("bad", ["", "../x", "a/b", "a\\b", ".hidden", "model.safetensors"])
    def test_export_name_must_be_a_plain_stem(self, bad):
        from featlab.io.weights import check_export_name

        with pytest.raises(ConfigError, match="plain file stem such as caps-resnet18"):
            check_export_name(bad, "caps-resnet18")
        check_export_name("caps-resnet18", "caps-resnet18")

    def test_shipped_name_needs_its_handcrafted_g(self):
        from types import SimpleNamespace

        from featlab.training import hooks

        check = hooks.export_name_check("pose-sift", handcrafted="rootsift")
        sift_run = SimpleNamespace(handcrafted=SimpleNamespace(name="sift"))
        check(sift_run, "my-pose-model")  # another name: any g
        check(SimpleNamespace(handcrafted=SimpleNamespace(name="rootsift")), "pose-sift")
        with pytest.raises(ConfigError, match="pose-sift uses handcrafted='rootsift', this run uses 'sift'"):
            check(sift_run, "pose-sift")
        with pytest.raises(ConfigError, match="plain file stem"):
            check(sift_run, "a/b")

    def test_path_flags_set_their_config_keys(self):
        import argparse

        from featlab.training import hooks

        parser = argparse.ArgumentParser()
        hooks.add_path_arguments(parser, ("data", "colmap", "val_data"))
        args = parser.parse_args(["--data", "seq", "--colmap", "a", "--colmap", "b"])
        user = hooks.apply_path_arguments({"data": {"gaps": [20]}}, args)
        assert user == {"data": {"gaps": [20], "root": "seq", "colmap": ["a", "b"]}}  # no val.root: not given

    def test_load_network_builds_from_the_sidecar_and_rejects_misfits(self, tmp_path):
        from featlab.io.weights import load_network, save_weights

        def build(model_conf):
            if model_conf["out"] <= 0:
                raise ValueError("out must be positive")
            return torch.nn.Linear(2, model_conf["out"])

        src = torch.nn.Linear(2, 3)
        path = save_weights(src, tmp_path / "w.safetensors", {"format": "t/1", "model": {"out": 3}})
        net, meta = load_network(path, "t/1", "test weights", "", build)
        assert torch.equal(net.weight, src.weight) and not net.training and meta["model"] == {"out": 3}
        bad = save_weights(src, tmp_path / "bad.safetensors", {"format": "t/1", "model": {"out": -1}})
        with pytest.raises(InputError, match="describes no valid network: out must be positive"):
            load_network(bad, "t/1", "test weights", "", build)
        misfit = save_weights(src, tmp_path / "misfit.safetensors", {"format": "t/1", "model": {"out": 4}})
        with pytest.raises(InputError, match="do not fit the network"):
            load_network(misfit, "t/1", "test weights", "", build)

    def test_copy_weights_copies_the_pair(self, tmp_path):
        from featlab.io.weights import copy_weights, load_weights, save_weights

        meta = {"format": "t/1", "model": {}, "k": 7}
        src = save_weights(torch.nn.Linear(2, 3), tmp_path / "a" / "best.safetensors", meta)
        dst = copy_weights(src, tmp_path / "b.safetensors")
        state, meta = load_weights(dst, "t/1", "test weights")
        assert meta["k"] == 7 and state["weight"].shape == (3, 2)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b.json", "b.safetensors"]  # no temporaries
