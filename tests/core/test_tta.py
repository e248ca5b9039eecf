"""Test-time augmentation: the views and their average (numpy and torch agree), export in the graph
(`convert --tta`, recorded in the manifest), and `evaluate --tta` / `predict --tta`."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeseg.cli import main as cli  # noqa: E402
from edgeseg.common.tta import TTA_MODES, parse_tta, tta_predict  # noqa: E402
from edgeseg.layers.tta import TestTimeAugmentation  # noqa: E402
from edgeseg.models import create_model  # noqa: E402


class _Ramp(torch.nn.Module):
    """Not flip-equivariant: each output pixel is the input times its column index."""

    def forward(self, x):
        w = torch.arange(x.shape[-1], dtype=x.dtype)
        return x[:, :1] * w


def test_hflip_is_the_mean_of_the_view_and_its_mirror():
    x = torch.randn(2, 3, 8, 10)
    got = TestTimeAugmentation(_Ramp(), "hflip")(x)
    ramp = _Ramp()
    want = (ramp(x) + torch.flip(ramp(torch.flip(x, (-1,))), (-1,))) / 2
    assert torch.allclose(got, want, atol=1e-6)
    # a flip-equivariant model is left as it is
    conv = torch.nn.Conv2d(3, 1, 1)
    assert torch.allclose(TestTimeAugmentation(conv, "flips")(x), conv(x), atol=1e-6)


@pytest.mark.parametrize("mode", TTA_MODES)
def test_numpy_and_torch_executors_agree(mode):
    torch.manual_seed(0)
    net = create_model("ultralightunet-t").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = TestTimeAugmentation(net, mode)(x).numpy()

        def predict(b: np.ndarray) -> np.ndarray:
            return net(torch.from_numpy(b)).numpy()

        got = tta_predict(predict, x.numpy(), parse_tta(mode))
    assert got.shape == ref.shape == (1, 1, 64, 64)
    assert np.abs(got - ref).max() < 1e-4
    assert parse_tta(mode).passes == {"hflip": 2, "flips": 4}[mode.split("+")[0]] * (3 if "+" in mode else 1)


def test_modes_and_their_errors():
    assert parse_tta("flips+scales").sizes((256, 256)) == [(192, 192), (256, 256), (320, 320)]
    assert parse_tta("hflip+scales", 32).sizes((352, 352)) == [(256, 256), (352, 352), (448, 448)]
    with pytest.raises(ValueError, match="unknown --tta mode 'rot90'; choose one of hflip, flips"):
        parse_tta("rot90")
    with pytest.raises(ValueError, match="scales are for 2D models"):
        TestTimeAugmentation(create_model("ultralightunet3d-t"), "flips+scales")
    assert parse_tta("flips").to_dict()["passes"] == 4 and parse_tta("flips").name == "flips"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from edgeseg.train.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("tta")
    res = train(TrainConfig(model="ultralightunet-t", data="synthetic:16", val="synthetic:4", epochs=1,
                            img_size=64, batch_size=4, out=str(out / "run"), threads=1, progress=False,
                            max_steps_per_epoch=3))
    imgs = out / "imgs"
    imgs.mkdir()
    from PIL import Image

    from edgeseg.common.phantoms import synthetic_sample

    for i in range(3):
        Image.fromarray(synthetic_sample(i, size=(72, 96))[0]).save(imgs / f"f{i}.png")
    return {"ckpt": res.best_path, "imgs": imgs, "root": out}


def test_evaluate_tta_scores_the_averaged_model(tiny, capsys):
    from edgeseg.data.sources import open_split
    from edgeseg.train.evaluate import evaluate_pairs
    from edgeseg.weights import resolve

    assert cli(["evaluate", "--weights", str(tiny["ckpt"]), "--data", "synthetic:6", "--json", "--tta", "flips"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tta"]["mode"] == "flips" and out["tta"]["passes"] == 4 and out["seconds_per_case"] > 0
    r = resolve(None, tiny["ckpt"])
    ds = open_split("synthetic:6", "val", 64)
    want = evaluate_pairs(TestTimeAugmentation(r.module, "flips"), ds, r.preprocessing, ids=ds.ids).mean
    assert out["dice"] == pytest.approx(want["dice"], abs=1e-9)
    assert cli(["evaluate", "--weights", str(tiny["ckpt"]), "--data", "synthetic:2", "--tta", "rot90"]) == 2
    assert "unknown --tta mode 'rot90'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def artifacts(tiny):
    pytest.importorskip("onnxruntime")
    from edgeseg.converters import ExportOptions, VerifyOptions, convert_model

    plain, = convert_model("ultralightunet-t", "onnx", weights=tiny["ckpt"], out_dir=tiny["root"] / "plain",
                           verify=VerifyOptions(images=4))
    carried, = convert_model("ultralightunet-t", "onnx", weights=tiny["ckpt"], out_dir=tiny["root"] / "tta",
                             export=ExportOptions(tta="flips"), verify=VerifyOptions(images=4))
    return plain, carried


def test_evaluate_scores_an_artifact_like_its_checkpoint_with_and_without_tta(tiny, artifacts, capsys):
    plain, carried = artifacts
    got = {}
    for key, argv in (("ckpt", ["--weights", str(tiny["ckpt"])]), ("onnx", ["--artifact", str(plain.artifact.path)]),
                      ("ckpt+tta", ["--weights", str(tiny["ckpt"]), "--tta", "flips"]),
                      ("onnx+tta", ["--artifact", str(plain.artifact.path), "--tta", "flips"]),
                      ("carried", ["--artifact", str(carried.artifact.path)])):
        assert cli(["evaluate", *argv, "--data", "synthetic:6", "--json", "--threads", "1"]) == 0, key
        got[key] = json.loads(capsys.readouterr().out)
    assert got["onnx"]["weights"].startswith("artifact:") and got["onnx"]["n"] == 6
    for a, b in (("ckpt", "onnx"), ("ckpt+tta", "onnx+tta"), ("ckpt+tta", "carried")):
        for k in ("dice", "iou", "recall"):
            assert got[a][k] == pytest.approx(got[b][k], abs=2e-3), (a, b, k)
    assert cli(["evaluate", "--artifact", str(plain.artifact.path), "--weights", str(tiny["ckpt"])]) == 2
    assert "pass one of --artifact, --weights or --model" in capsys.readouterr().err


def test_an_artifact_carries_tta_and_predict_applies_it_once(tiny, artifacts, capsys):
    from PIL import Image

    plain, carried = artifacts
    # verified against the averaged torch model, and it says so
    assert carried.passed and carried.manifest.model_cfg["tta"]["mode"] == "flips"
    assert "tta" not in plain.manifest.model_cfg
    # the graph holds the model once: the views run as one batch
    onnx = pytest.importorskip("onnx")

    def convs(path):
        return sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)

    assert convs(carried.artifact.path) == convs(plain.artifact.path)
    # a threshold at the median probability gives masks with real foreground and background
    from edgeseg.runtimes.processing import preprocess, read_image, sigmoid

    from edgeseg import runtimes

    with runtimes.load(plain.artifact.path) as rt:
        probs = [sigmoid(rt.infer(preprocess(read_image(f), rt.manifest.preprocessing)[0]))
                 for f in sorted(tiny["imgs"].iterdir())]
    thr = str(float(np.median(np.concatenate([p.ravel() for p in probs]))))
    masks = {}
    for name, art, extra in (("plain+tta", plain, ["--tta", "flips"]), ("carried", carried, []),
                             ("plain", plain, [])):
        dest = tiny["root"] / "pred" / name
        assert cli(["predict", "--artifact", str(art.artifact.path), "--input", str(tiny["imgs"]), "--out",
                    str(dest), "--json", "--threshold", thr, *extra]) == 0
        rows = json.loads(capsys.readouterr().out)["outputs"]
        masks[name] = [np.asarray(Image.open(r["mask"])) for r in rows]

    def agreement(a: str, b: str) -> float:
        return float(np.mean([np.mean(x == y) for x, y in zip(masks[a], masks[b])]))

    # numpy TTA around the plain artifact == the TTA the artifact carries, and both differ from no TTA
    assert agreement("plain+tta", "carried") > 0.999 > agreement("plain", "carried")
    # applying it twice is refused
    rc = cli(["predict", "--artifact", str(carried.artifact.path), "--input", str(tiny["imgs"]), "--out",
              str(tiny["root"] / "pred" / "twice"), "--tta", "hflip"])
    assert rc == 2 and "already averages flips views" in capsys.readouterr().err
