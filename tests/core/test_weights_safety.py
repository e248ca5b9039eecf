"""Loading a checkpoint never runs code from it; third-party wrappers load; non-finite weights are refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

torch = pytest.importorskip("torch")


class _OpensAFile:
    """A pickle payload: unpickling it calls open(path, "w"), as an attacker's checkpoint would."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _state_dict():
    from edgeseg.models import create_model

    torch.manual_seed(0)
    return create_model("ultralightunet-t").state_dict()


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    from edgeseg.weights import read_checkpoint

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": "ultralightunet-t", "state_dict": _state_dict(), "x": _OpensAFile(str(marker))}, evil)
    with pytest.raises(ValueError, match=r"refused: .*could run code.*re-save its weights"):
        read_checkpoint(evil)
    assert not marker.exists()


@pytest.mark.parametrize("cmd", [
    ["predict", "--weights", "{ckpt}", "--input", "{img}", "--out", "{out}"],
    ["evaluate", "--weights", "{ckpt}", "--data", "synthetic:4", "--img-size", "64"],
    ["convert", "--model", "ultralightunet-t", "--weights", "{ckpt}", "--target", "onnx", "--out", "{out}"],
])
def test_commands_that_take_weights_never_execute_them(tmp_path, cmd):
    from PIL import Image

    from edgeseg.common.phantoms import synthetic_sample

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pt"
    torch.save({"model": "ultralightunet-t", "state_dict": _state_dict(), "x": _OpensAFile(str(marker))}, ckpt)
    img = tmp_path / "a.png"
    Image.fromarray(synthetic_sample(0, 64)[0]).save(img)
    args = [a.format(ckpt=ckpt, img=img, out=tmp_path / "out") for a in cmd]
    res = subprocess.run([sys.executable, "-m", "edgeseg", *args], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode != 0 and "refused" in res.stderr and "Traceback" not in res.stderr
    assert not marker.exists()


@pytest.mark.parametrize("wrap", ["bare", "net", "model", "state_dict-module-prefix"])
def test_third_party_wrappers_load(tmp_path, wrap):
    from edgeseg.models import create_model

    sd = _state_dict()
    obj = {
        "bare": sd,
        "net": {"net": sd, "epoch": 3},
        "model": {"model": sd, "optimizer": {"lr": 0.1}},
        "state_dict-module-prefix": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    }[wrap]
    path = tmp_path / "third.pt"
    torch.save(obj, path)
    model = create_model("ultralightunet-t", weights=path)
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())


def test_non_finite_weights_are_refused(tmp_path):
    from edgeseg.weights import read_checkpoint

    sd = _state_dict()
    name = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)
    sd[name] = sd[name].clone()
    sd[name].view(-1)[0] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save({"model": "ultralightunet-t", "state_dict": sd}, path)
    with pytest.raises(ValueError, match=f"1 weight tensor.*NaN or inf.*{name}"):
        read_checkpoint(path)
