"""One record per format: the tables every part uses are read from edgeseg.runtimes.formats, and agree."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from edgeseg.runtimes.formats import FORMATS, RUNTIMES, format_of_suffix, get_format, runtimes_for


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_record_is_complete_and_consistent(name):
    fmt = FORMATS[name]
    assert fmt.runtime in RUNTIMES and format_of_suffix(fmt.suffix) is fmt
    assert runtimes_for(name)[0] == fmt.runtime
    module, cls = RUNTIMES[fmt.runtime].split(":")
    runtime = getattr(importlib.import_module(module), cls)  # imports without its backend package
    assert runtime.name == fmt.runtime
    if fmt.target is not None:
        assert fmt.target.name == name and fmt.target.suffix == fmt.suffix and fmt.target.runtime == fmt.runtime
        assert fmt.target.impl.startswith("edgeseg.converters.")


def test_the_parts_read_the_records():
    from edgeseg.benchmarks import harness
    from edgeseg.converters.base import TARGETS
    from edgeseg.runtimes import list_runtimes

    targets = [n for n, f in FORMATS.items() if f.target is not None]
    assert list(TARGETS) == targets and list(harness.TARGETS) == targets
    assert list_runtimes() == list(RUNTIMES)
    assert runtimes_for("onnx") == ["onnxruntime", "openvino"]  # OpenVINO reads ONNX too
    assert [s.runtime for s in harness.expand_matrix(["onnx"], ["fp32"], ["cpu"], ["openvino", "litert"])
            if not s.is_reference] == ["openvino"]


def test_an_artifacts_files_come_from_its_format(tmp_path):
    from edgeseg.benchmarks.harness import artifact_size

    xml, binf = tmp_path / "m.xml", tmp_path / "m.bin"
    xml.write_bytes(b"x" * 10)
    binf.write_bytes(b"y" * 32)
    assert get_format("openvino").files(xml) == [binf, xml]  # the main file last, as converters write them
    assert artifact_size(xml, "openvino") == 42 and artifact_size(Path(xml), "onnx") == 10
    with pytest.raises(ValueError, match="unknown format 'onx'. Did you mean 'onnx'"):
        get_format("onx")


def test_backend_hooks_replace_per_backend_branches():
    from edgeseg.benchmarks.harness import BenchConfig, runtime_options
    from edgeseg.runtimes import get_runtime

    assert get_runtime("onnxruntime").busy_wait_options(False) == {
        "session_config": {"session.intra_op.allow_spinning": "0"}}
    assert get_runtime("openvino").busy_wait_options(True) == {}
    cfg = BenchConfig("ultralightunet-t", busy_wait="off",
                      runtime_options={"onnxruntime": {"session_config": {"x": "1"}}})
    assert runtime_options(cfg, "onnxruntime") == {
        "session_config": {"x": "1", "session.intra_op.allow_spinning": "0"}}
    assert "providers: " in get_runtime("onnxruntime").summary({"providers": ["CPUExecutionProvider"]})


def test_all_means_what_each_target_makes():
    from edgeseg.benchmarks.harness import expand_matrix

    rows = [(s.target, s.precision) for s in expand_matrix(["executorch", "onnx"], ["fp32", "fp16", "int8"], ["cpu"])
            if not s.is_reference]
    assert ("executorch", "fp16") not in rows and ("onnx", "fp16") in rows and ("executorch", "int8") in rows
