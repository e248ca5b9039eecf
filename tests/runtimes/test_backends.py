"""runtimes: every backend returns the torch reference's logits; validation and discovery errors are clear.

The artifacts are built here, small (ultralightunet-t at 64x64), once per module.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from edgeseg.runtimes.base import DeviceNotAvailableError, Runtime, RuntimeUnavailableError
from edgeseg.runtimes.manifest import Manifest, Preprocessing, TensorSpec, manifest_path

from edgeseg import runtimes
from tests.conftest import REPO
from tests.test_packaging import _BLOCK_TORCH

SIZE = 64
MODEL = "ultralightunet-t"
FP32_TOL = 1e-4


def reference_model(seed: int = 0):
    """A deterministic random ultralightunet-t in eval mode (random weights are fine for parity)."""
    torch = pytest.importorskip("torch")
    import edgeseg

    torch.manual_seed(seed)
    return edgeseg.create_model(MODEL).eval()


def write_manifest(artifact: Path, target: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
                   resize: str = "stretch") -> Manifest:
    m = Manifest(artifact=artifact.name, target=target, precision="fp32", model=MODEL, inputs=inputs,
                 outputs=outputs, preprocessing=Preprocessing(size=[SIZE, SIZE], resize=resize))
    m.save(manifest_path(artifact))
    return m


def export_onnx(model, path: Path, dynamic: bool = True) -> Path:
    """Legacy TorchScript ONNX export (fast), dynamic batch and spatial size, with a manifest."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    axes = {0: "n", 2: "h", 3: "w"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": axes, "logits": axes} if dynamic else None)
    d = -1 if dynamic else SIZE
    write_manifest(path, "onnx", [TensorSpec("input", [-1 if dynamic else 1, 3, d, d])],
                   [TensorSpec("logits", [-1 if dynamic else 1, 1, d, d])])
    return path


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def ref():
    return reference_model()


@pytest.fixture(scope="module")
def onnx_artifact(ref, tmp_path_factory) -> Path:
    return export_onnx(ref, tmp_path_factory.mktemp("onnx") / "t.onnx")


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)


# ---- parity against the torch reference ----
def test_onnxruntime_matches_torch(onnx_artifact, ref, batch):
    pytest.importorskip("onnxruntime")
    with runtimes.load(onnx_artifact, threads=1) as rt:
        assert rt.name == "onnxruntime" and rt.manifest.model == MODEL
        out = rt.infer(batch)
        assert rt.info()["providers"][0] == "CPUExecutionProvider"
    assert out.shape == (2, 1, SIZE, SIZE) and out.dtype == np.float32
    assert np.abs(out - torch_logits(ref, batch)).max() < FP32_TOL
    # Dynamic spatial dims: another size runs too.
    x = batch[:1, :, :32, :96].copy()
    with runtimes.load(onnx_artifact, threads=1) as rt:
        assert np.abs(rt.infer(x) - torch_logits(ref, x)).max() < FP32_TOL


def test_openvino_runs_onnx_and_ir_like_torch(onnx_artifact, ref, batch, tmp_path):
    ov = pytest.importorskip("openvino")

    with runtimes.load(onnx_artifact, runtime="openvino", threads=1) as rt:
        assert rt.info()["inference_precision"].endswith("float32'>")  # f32 asked for, not bf16
        assert np.abs(rt.infer(batch) - torch_logits(ref, batch)).max() < FP32_TOL
    xml = tmp_path / "t.xml"
    ov.save_model(ov.convert_model(str(onnx_artifact)), str(xml))  # IR (from the ONNX file: fast)
    write_manifest(xml, "openvino", [TensorSpec("input", [-1, 3, -1, -1])], [TensorSpec("logits", [-1, 1, -1, -1])])
    with runtimes.load(xml, threads=1, hint="THROUGHPUT") as rt:
        assert rt.name == "openvino" and rt.info()["config"]["PERFORMANCE_HINT"] == "THROUGHPUT"
        assert np.abs(rt.infer(batch) - torch_logits(ref, batch)).max() < FP32_TOL
    (tmp_path / "t.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"t\.bin"):
        runtimes.load(xml)


def test_torch_runtime_by_name_checkpoint_and_module(ref, batch, tmp_path):
    torch = pytest.importorskip("torch")
    from edgeseg.runtimes.torch_runtime import TorchRuntime

    ckpt = tmp_path / "best.pt"
    torch.save({"format": "edgeseg-checkpoint/1", "model": MODEL, "model_kwargs": {},
                "state_dict": ref.state_dict(), "preprocessing": {"size": [SIZE, SIZE], "resize": "letterbox"}},
               ckpt)
    want = torch_logits(ref, batch)
    with runtimes.load(ckpt, runtime="torch") as rt:
        assert rt.manifest.target == "torch" and rt.manifest.input.shape == [-1, 3, -1, -1]
        assert rt.manifest.preprocessing.resize == "letterbox" and rt.manifest.weights["sha256"]
        np.testing.assert_array_equal(rt.infer(batch), want)
    with pytest.raises(ValueError, match="checkpoint is for model 'ultralightunet-t', not 'ultralightunet-s'"):
        runtimes.load(ckpt, runtime="torch", model="ultralightunet-s")
    # A bare state_dict needs the model name.
    bare = tmp_path / "bare.pt"
    torch.save(ref.state_dict(), bare)
    with pytest.raises(ValueError, match="bare state_dict"):
        runtimes.load(bare, runtime="torch")
    np.testing.assert_array_equal(runtimes.load(bare, runtime="torch", model=MODEL).infer(batch), want)
    # In-memory module, taking the candidate's manifest.
    cand = Manifest(artifact="x.tflite", target="tflite", precision="fp32", model=MODEL,
                    inputs=[TensorSpec("in", [1, SIZE, SIZE, 3], layout="nhwc")],
                    outputs=[TensorSpec("out", [1, SIZE, SIZE, 1], layout="nhwc")],
                    preprocessing=Preprocessing(size=[SIZE, SIZE], resize="letterbox"))
    rt = TorchRuntime.from_module(ref, cand)
    assert rt.manifest.input.layout == "nchw" and rt.manifest.input.shape == [-1, 3, SIZE, SIZE]
    assert rt.manifest.preprocessing.resize == "letterbox"
    np.testing.assert_array_equal(rt.infer(batch), want)
    with pytest.raises(ValueError, match=r"expected input shape \[-1, 3, 64, 64\]"):
        rt.infer(batch[:, :, :32])


def test_load_model_name_with_torch_runtime(monkeypatch):
    pytest.importorskip("torch")
    import edgeseg.weights

    monkeypatch.setattr(edgeseg.weights, "shipped_weights", lambda name: None)
    with pytest.warns(UserWarning, match="RANDOM"):
        rt = runtimes.load("ultralightunet-s", runtime="torch", threads=1)
    assert rt.manifest.preprocessing.size == [256, 256] and rt.manifest.model_cfg["name"] == "ultralightunet-s"
    assert rt.infer(np.zeros((1, 3, 64, 64), np.float32)).shape == (1, 1, 64, 64)
    rt.close()
    with pytest.raises(ValueError, match="Did you mean"):
        runtimes.load("ultralightunet-x", runtime="torch")


def test_load_model_name_uses_shipped_weights_and_their_preprocessing():
    pytest.importorskip("torch")
    import warnings

    from edgeseg.weights import read_checkpoint, shipped_weights

    path = shipped_weights("ultralightunet-s")
    if path is None:
        pytest.skip("no shipped weights for ultralightunet-s")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no random-weights warning
        rt = runtimes.load("ultralightunet-s", runtime="torch", threads=1)
    size = read_checkpoint(path)["preprocessing"]["size"]
    assert rt.manifest.preprocessing.size == list(size)
    rt.close()


# ---- input validation ----
def test_wrong_dtype_rank_shape_say_what_was_expected(onnx_artifact, tmp_path, ref):
    pytest.importorskip("onnxruntime")
    rt = runtimes.load(onnx_artifact)
    with pytest.raises(ValueError, match="float32"):
        rt.infer(np.zeros((1, 3, SIZE, SIZE), np.float64))
    with pytest.raises(ValueError, match="rank 4"):
        rt.infer(np.zeros((3, SIZE, SIZE), np.float32))
    with pytest.raises(ValueError, match=r"channels-last.*np\.transpose\(x, \(0, 3, 1, 2\)\)"):
        rt.infer(np.zeros((1, SIZE, SIZE, 3), np.float32))
    with pytest.raises(ValueError, match="numpy array"):
        rt.infer([[0.0]])
    static = export_onnx(ref, tmp_path / "static.onnx", dynamic=False)
    rt = runtimes.load(static)
    with pytest.raises(ValueError, match=r"expected input shape \[1, 3, 64, 64\]"):
        rt.infer(np.zeros((1, 3, 32, 32), np.float32))
    # A batch-1 artifact runs larger batches one sample at a time.
    x = np.random.default_rng(1).normal(size=(3, 3, SIZE, SIZE)).astype(np.float32)
    assert np.abs(rt.infer(x) - torch_logits(ref, x)).max() < FP32_TOL


def test_manifest_that_belongs_to_another_model_is_refused(onnx_artifact, tmp_path):
    pytest.importorskip("onnxruntime")
    other = tmp_path / "other.onnx"
    other.write_bytes(onnx_artifact.read_bytes())
    write_manifest(other, "onnx", [TensorSpec("images", [-1, 3, -1, -1])], [TensorSpec("y", [-1, 1, -1, -1])])
    with pytest.raises(ValueError, match="another artifact"):
        runtimes.load(other)


def test_artifact_without_manifest_is_refused_unless_the_preprocessing_is_given(onnx_artifact, tmp_path, ref, batch):
    pytest.importorskip("onnxruntime")
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(onnx_artifact.read_bytes())
    with pytest.raises(ValueError, match=r"no manifest beside it \(bare\.onnx\.json\).*edgeseg convert.*"
                                         r"--preprocessing") as exc:
        runtimes.load(bare)
    assert "\n" not in str(exc.value)
    given = {"size": [SIZE, SIZE], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    rt = runtimes.load(bare, preprocessing=given)
    m = rt.manifest
    assert m.extra["preprocessing"] == "given" and m.input.shape == [-1, 3, -1, -1]
    assert m.postprocessing.activation == "sigmoid"
    assert (m.preprocessing.size, m.preprocessing.mean, m.preprocessing.std, m.preprocessing.color) == \
        ([SIZE, SIZE], [0.5] * 3, [0.25] * 3, "rgb")
    assert np.abs(rt.infer(batch) - torch_logits(ref, batch)).max() < FP32_TOL
    # the same as JSON text, or a JSON file (another artifact's manifest works too)
    (tmp_path / "pre.json").write_text(json.dumps(given))
    assert runtimes.load(bare, preprocessing=json.dumps(given)).manifest.preprocessing.std == [0.25] * 3
    assert runtimes.load(bare, preprocessing=tmp_path / "pre.json").manifest.preprocessing.mean == [0.5] * 3
    assert runtimes.load(bare, preprocessing=manifest_path(onnx_artifact)).manifest.preprocessing.size == [SIZE] * 2


def test_explicit_preprocessing_is_checked(onnx_artifact, tmp_path):
    pytest.importorskip("onnxruntime")
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(onnx_artifact.read_bytes())
    with pytest.raises(ValueError, match="missing mean, std.*required"):  # a size alone would guess mean/std again
        runtimes.load(bare, preprocessing={"size": [SIZE, SIZE]})
    with pytest.raises(ValueError, match="unknown field.*sizes"):
        runtimes.load(bare, preprocessing={"sizes": [SIZE, SIZE], "mean": [0.5] * 3, "std": [0.5] * 3})
    with pytest.raises(ValueError, match="not valid JSON"):
        runtimes.load(bare, preprocessing="{size: 64}")
    with pytest.raises(FileNotFoundError, match="pre-processing file not found"):
        runtimes.load(bare, preprocessing=tmp_path / "nope.json")
    with pytest.raises(ValueError, match="takes 3 channel.*1 mean/std value"):
        runtimes.load(bare, preprocessing={"size": [SIZE, SIZE], "mean": [0.5], "std": [0.5]})
    with pytest.raises(ValueError, match="is 3D but the model takes 2D"):
        runtimes.load(bare, preprocessing={"size": [8, 8, 8], "mean": [0.5] * 3, "std": [0.5] * 3})
    # an artifact with a manifest keeps the pre-processing it was verified with
    with pytest.raises(ValueError, match="has a manifest.*drop the explicit pre-processing"):
        runtimes.load(onnx_artifact, preprocessing={"size": [SIZE, SIZE], "mean": [0.5] * 3, "std": [0.5] * 3})
    # the torch reference describes itself (checkpoint record, model config); a given one replaces that
    pytest.importorskip("torch")
    given = {"size": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "resize": "letterbox"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with runtimes.load(MODEL, runtime="torch", threads=1, preprocessing=given) as rt:
            pre = rt.manifest.preprocessing
            assert (pre.size, pre.mean, pre.resize) == ([32, 32], [0.5] * 3, "letterbox")
            assert rt.manifest.extra["preprocessing"] == "given"


# ---- discovery and selection errors ----
def test_unknown_device_lists_the_available_ones(onnx_artifact):
    pytest.importorskip("onnxruntime")
    with pytest.raises(DeviceNotAvailableError, match=r"no device 'tpu'.*available: cpu"):
        runtimes.load(onnx_artifact, device="tpu")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(DeviceNotAvailableError, match="available: cpu"):
            runtimes.load(onnx_artifact, device="gpu")


def test_provider_mapping():
    from edgeseg.runtimes.ort_runtime import providers_for

    have = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("gpu", have) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("tensorrt", have) == ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("auto", have) == have
    assert providers_for("cpu", have) == ["CPUExecutionProvider"]
    with pytest.raises(DeviceNotAvailableError):
        providers_for("coreml", have)


def test_unknown_runtime_missing_artifact_and_wrong_target(onnx_artifact, tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'onnxruntime'"):
        runtimes.load(onnx_artifact, runtime="onnxruntim")
    with pytest.raises(FileNotFoundError, match="artifact not found"):
        runtimes.load(tmp_path / "nope.onnx")
    with pytest.raises(ValueError, match="cannot run a onnx artifact; use one of: onnxruntime, openvino"):
        runtimes.load(onnx_artifact, runtime="litert")
    odd = tmp_path / "model.bin2"
    odd.write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown suffix"):
        runtimes.load(odd)


def test_missing_backend_names_the_extra(monkeypatch, onnx_artifact):
    from edgeseg.runtimes.openvino_runtime import OpenVINORuntime

    monkeypatch.setattr(OpenVINORuntime, "is_available", classmethod(lambda cls: False))
    with pytest.raises(RuntimeUnavailableError, match=r"pip install 'edgeseg\[openvino\]' -c constraints.txt"):
        runtimes.load(onnx_artifact, runtime="openvino")
    row = next(r for r in runtimes.runtime_info() if r["name"] == "openvino")
    assert row["available"] is False and "edgeseg[openvino]" in row["install"] and row["devices"] == []


class _Echo(Runtime):
    """A backend that returns its (native) input: exposes the base class's layout and dtype handling."""

    name = "echo"

    def _load_impl(self) -> None:
        self.seen = None

    def _infer_impl(self, x):
        self.seen = x
        return x[:, :1] if not self.input_spec.channels_last else x[..., :1]


def _echo(layout: str, dtype: str = "float32", scale=None, zp=None) -> _Echo:
    shape = [1, 3, 4, 5] if layout == "nchw" else [1, 4, 5, 3]
    out = [1, 1, 4, 5] if layout == "nchw" else [1, 4, 5, 1]
    m = Manifest(artifact="e", target="onnx", precision="int8", model="e",
                 inputs=[TensorSpec("i", shape, layout, dtype, scale, zp)],
                 outputs=[TensorSpec("o", out, layout, dtype, scale, zp)],
                 preprocessing=Preprocessing(size=[4, 5]))
    rt = _Echo("e", manifest=m)
    rt.is_available = lambda: True  # type: ignore[method-assign]
    return rt.load()


def test_nhwc_artifacts_take_and_give_nchw():
    x = np.arange(60, dtype=np.float32).reshape(1, 3, 4, 5)
    rt = _echo("nhwc")
    y = rt.infer(x)
    assert rt.seen.shape == (1, 4, 5, 3) and np.array_equal(rt.seen, x.transpose(0, 2, 3, 1))
    assert y.shape == (1, 1, 4, 5) and np.array_equal(y, x[:, :1])


def test_integer_io_is_quantized_and_dequantized():
    x = np.linspace(-1, 1, 60, dtype=np.float32).reshape(1, 3, 4, 5)
    rt = _echo("nchw", "int8", scale=1 / 127, zp=0)
    y = rt.infer(x)
    assert rt.seen.dtype == np.int8 and rt.seen.min() == -127 and rt.seen.max() == 127
    assert y.dtype == np.float32 and np.abs(y - x[:, :1]).max() <= 0.5 / 127 + 1e-6
    rt = _echo("nchw", "uint8", scale=2 / 255, zp=128)
    y = rt.infer(x * 10)  # far outside the representable range [-1.004, 0.996]: clipped
    assert rt.seen.dtype == np.uint8 and rt.seen.min() == 0 and rt.seen.max() == 255
    assert y.min() == pytest.approx(-128 * 2 / 255)


# ---- device side without torch, discovery, CPU info ----
def test_onnx_artifact_runs_with_torch_blocked(onnx_artifact, batch, tmp_path):
    pytest.importorskip("onnxruntime")
    np.save(tmp_path / "x.npy", batch)
    code = _BLOCK_TORCH + f"""
import numpy as np, runtimes
rt = runtimes.load({str(onnx_artifact)!r}, threads=1)
np.save({str(tmp_path / 'y.npy')!r}, rt.infer(np.load({str(tmp_path / 'x.npy')!r})))
row = {{r["name"]: r for r in runtimes.runtime_info()}}["torch"]
assert row["available"] is False and "edgeseg[train]" in row["install"], row
assert "torch" not in sys.modules
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr
    with runtimes.load(onnx_artifact) as rt:
        np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), rt.infer(batch))


def test_parse_cpuinfo_x86_and_arm():
    from edgeseg.runtimes.sysinfo import ISA_FLAGS, isa_summary, parse_cpuinfo

    x86 = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon X\nphysical id\t: 0\ncore id\t: 0\n"
           "flags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni amx_tile\n\n"
           "processor\t: 1\nphysical id\t: 0\ncore id\t: 0\nflags\t\t: fpu\n\n"
           "processor\t: 2\nphysical id\t: 0\ncore id\t: 1\nflags\t\t: fpu\n")
    got = parse_cpuinfo(x86)
    assert got["model"] == "Xeon X" and got["physical_cores"] == 2
    isa = [f for f in ISA_FLAGS if f in got["flags"]]
    assert isa == ["sse4_2", "avx2", "avx512f", "avx512_vnni", "amx_tile"]
    assert isa_summary(isa) == "AMX, AVX-512, AVX2, VNNI"
    arm = "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n\nHardware\t: Raspberry Pi 5\n"
    got = parse_cpuinfo(arm)
    assert got["model"] == "Raspberry Pi 5" and {"asimd", "asimddp", "i8mm"} <= got["flags"]


def test_cli_devices_json_matches_this_machine():
    res = subprocess.run([sys.executable, "-m", "edgeseg", "devices", "--format", "json"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    rows = {r["name"]: r for r in info["runtimes"]}
    assert set(rows) == {"torch", "onnxruntime", "openvino", "litert", "executorch"}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        text = cpuinfo.read_text()
        flags = set(next(line for line in text.splitlines() if line.startswith(("flags", "Features")))
                    .split(":", 1)[1].split())
        assert set(info["cpu"]["isa"]) <= flags and ("avx2" in flags) == ("avx2" in info["cpu"]["isa"])
    assert info["cpu"]["logical_cores"] >= 1
    try:
        import onnxruntime as ort
    except ImportError:
        assert rows["onnxruntime"]["available"] is False
    else:
        assert rows["onnxruntime"]["version"] == ort.__version__
        assert rows["onnxruntime"]["details"]["providers"] == ort.get_available_providers()
        assert "cpu" in rows["onnxruntime"]["devices"]
    try:
        import openvino as ov
    except ImportError:
        assert rows["openvino"]["available"] is False
    else:
        have = [d.lower() for d in ov.Core().available_devices]
        assert set(have) <= set(rows["openvino"]["devices"])
    res = subprocess.run([sys.executable, "-m", "edgeseg", "devices"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("CPU ") and "onnxruntime" in res.stdout
