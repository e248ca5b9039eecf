"""int8 that holds on any CPU: the int8 kernel family is read from CPUID, each backend's scheme is chosen for
it, the manifest records where the artifact was verified, and runtimes warn on a CPU whose int8 path differs.

No assertion here depends on the CPU the suite runs on: the portable scheme is tested by its graph (it
cannot saturate), the warnings by stating the CPU, and the kernel decoder by flag lists.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from edgeseg.runtimes import base, sysinfo
from edgeseg.runtimes.manifest import Manifest, Preprocessing, TensorSpec

from tests.converters.test_matrix import SIZE, _convert, _fresh_images, checkpoint, reference  # noqa: F401


@pytest.mark.parametrize(
    "flags,path,saturates",
    [
        (["sse4_2", "avx", "avx2", "fma"], "avx2", True),
        (["avx2", "avx512f", "avx512bw", "avx512vl"], "avx512", True),
        (["avx2", "avx512f", "avx512bw", "avx512_vnni"], "vnni", False),
        (["avx2", "avx_vnni"], "vnni", False),
        (["avx2", "avx512bw", "avx512_vnni", "amx_tile", "amx_int8"], "amx", False),
        (["neon", "asimd", "asimddp"], "dotprod", False),
        (["neon", "asimd", "asimddp", "i8mm"], "i8mm", False),
    ],
)
def test_int8_path_from_flags(flags, path, saturates):
    assert sysinfo.int8_path(flags) == path
    assert sysinfo.int8_saturates(path) is saturates


def test_cpuid_is_what_this_process_runs():
    real = sysinfo.cpuid_flags()
    if real is None:
        pytest.skip("CPUID cannot be asked here (not x86-64, or executable pages are forbidden)")
    assert real <= set(sysinfo._CPUID_BITS)
    assert "avx2" in real or "avx512f" not in real  # no x86 CPU has AVX-512 without AVX2
    isa = set(sysinfo.cpu_info()["isa"])
    assert {f for f in isa if f in sysinfo._CPUID_BITS} == real  # cpu_info reports CPUID, not the host text


def test_auto_resolves_for_this_cpu(monkeypatch):
    from edgeseg.converters.base import resolve_int8_isa

    monkeypatch.setattr(sysinfo, "int8_path", lambda isa=None: "avx2")
    assert resolve_int8_isa("auto") == "portable"
    monkeypatch.setattr(sysinfo, "int8_path", lambda isa=None: "vnni")
    assert resolve_int8_isa("auto") == "vnni" and resolve_int8_isa("portable") == "portable"
    with pytest.raises(ValueError, match="unknown int8 ISA 'avx3'.*auto, portable, vnni"):
        from edgeseg.converters import QuantOptions

        QuantOptions(isa="avx3")


def _int8_manifest(isa: str, verified_path: str | None) -> Manifest:
    spec = TensorSpec(name="x", shape=[1, 3, 8, 8], layout="nchw", dtype="float32")
    return Manifest(artifact="m_int8.onnx", target="onnx", precision="int8", model="m", inputs=[spec],
                    outputs=[spec], preprocessing=Preprocessing(size=[8, 8]),
                    quantization={"scheme": "static", "int8_isa": isa},
                    parity={"cpu": {"int8_path": verified_path}} if verified_path else {})


def test_warning_names_the_cpu_and_the_fix(monkeypatch):
    monkeypatch.setattr(sysinfo, "int8_path", lambda isa=None: "avx2")
    msg = base.int8_cpu_warning(_int8_manifest("vnni", "vnni"))
    assert "saturate" in msg and "--int8-isa portable" in msg and "'avx2'" in msg
    msg = base.int8_cpu_warning(_int8_manifest("portable", "vnni"))  # portable: only "re-check it here"
    assert "verified on a CPU with int8 path 'vnni'" in msg and "saturate" not in msg
    assert base.int8_cpu_warning(_int8_manifest("portable", "avx2")) is None  # same path: nothing to say
    fp32 = _int8_manifest("vnni", "vnni")
    fp32.precision = "fp32"
    assert base.int8_cpu_warning(fp32) is None


@pytest.fixture(scope="module")
def portable_onnx(checkpoint, tmp_path_factory):  # noqa: F811
    return _convert(checkpoint, tmp_path_factory.mktemp("isa"), "onnx", "int8", int8_isa="portable")[0]


def test_portable_onnx_int8_cannot_saturate(portable_onnx, reference):  # noqa: F811
    """U8U8: uint8 weights, which MLAS multiplies without the int16 pair sums of U8S8 on AVX2."""
    import onnx
    import torch
    from edgeseg.converters.verify import masks_of

    from edgeseg import runtimes

    res = portable_onnx
    q = res.manifest.quantization
    assert q["int8_isa"] == "portable" and q["weights"].startswith("uint8")
    graph = onnx.load(str(res.artifact.path)).graph
    inits = {i.name: i for i in graph.initializer}
    conv_w = [n.input[1] for n in graph.node if n.op_type == "Conv"]
    producers = {o: n for n in graph.node for o in n.output}
    dq = [producers[w] for w in conv_w if w in producers and producers[w].op_type == "DequantizeLinear"]
    assert dq and all(inits[n.input[0]].data_type == onnx.TensorProto.UINT8 for n in dq if n.input[0] in inits)
    assert res.manifest.parity["cpu"]["int8_path"] == sysinfo.int8_path()
    x = _fresh_images()
    with runtimes.load(res.artifact.path) as rt:
        got = rt.infer(x)
    with torch.no_grad():
        want = reference(torch.from_numpy(x)).numpy()
    pp = res.manifest.postprocessing
    assert np.mean(masks_of(got, pp) == masks_of(want, pp)) >= 0.93


def test_runtime_load_warns_once_on_another_int8_path(portable_onnx, monkeypatch):
    from edgeseg import runtimes

    other = "avx2" if sysinfo.int8_path() != "avx2" else "vnni"
    monkeypatch.setattr(sysinfo, "int8_path", lambda isa=None: other)
    monkeypatch.setattr(base, "_WARNED", set())
    with pytest.warns(base.Int8CpuWarning, match=f"this one is '{other}'"):
        rt = runtimes.load(portable_onnx.artifact.path)
    assert rt.int8_warning and f"'{other}'" in rt.int8_warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", base.Int8CpuWarning)
        runtimes.load(portable_onnx.artifact.path).close()  # once per artifact and CPU
    rt.close()
