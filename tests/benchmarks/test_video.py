"""benchmarks.video: bench rows scored on clips with smoothing off and on; the spec's forms and errors."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

from edgeseg.benchmarks.results import OK, Row, RunResult  # noqa: E402
from edgeseg.benchmarks.video import VideoSpec, video_rows  # noqa: E402

from tests.runtimes.test_backends import export_onnx, reference_model  # noqa: E402


def test_spec_forms_and_errors():
    assert VideoSpec.parse("8x60") == VideoSpec(simulate=8, frames=60)
    assert VideoSpec.parse("3") == VideoSpec(simulate=3, frames=120)
    assert VideoSpec.parse("a,b").folders == ["a", "b"]
    assert VideoSpec.parse({"simulate": 2, "frames": 10}).simulate == 2
    assert VideoSpec.parse(["c"]).folders == ["c"]
    with pytest.raises(ValueError, match="unknown key"):
        VideoSpec.parse({"clip": 3})
    with pytest.raises(ValueError, match="give clip folders"):
        VideoSpec()


def test_every_artifact_row_is_scored_off_and_on_and_reported(tmp_path):
    from edgeseg.benchmarks.html_report import render_html

    art = export_onnx(reference_model(), tmp_path / "t.onnx")
    rows = [Row(target="torch", precision="fp32", runtime="torch", device="cpu", status=OK, reference=True,
                artifact="ref.pt"),
            Row(target="onnx", precision="fp32", runtime="onnxruntime", device="cpu", status=OK, artifact=str(art)),
            Row(target="onnx", precision="int8", runtime="onnxruntime", device="cpu", status="load-failed")]
    run = RunResult(run_id="r", created="", config={"data": "synthetic", "threads": 1}, environment={}, rows=rows)
    run.video = video_rows(run, VideoSpec(simulate=1, frames=16))
    [entry] = run.video  # the reference and the failed row are not scored
    assert entry["row"].startswith("onnx/fp32") and set(entry["results"]) == {"raw", "default"}
    raw, shown = entry["results"]["raw"], entry["results"]["default"]
    assert raw["frames"] == shown["frames"] >= 16 and raw["clips"] == 1 and raw["appearances"] >= 1
    assert 0.0 <= shown["dice"] <= 1.0 and shown["flicker_per_s"] >= 0
    from edgeseg.benchmarks.temporal import off_vs_on

    assert entry["off_vs_on"] == off_vs_on(entry["results"])
    assert entry["off_vs_on"]["dice_change"] == pytest.approx(shown["dice"] - raw["dice"])
    page = render_html(run)
    assert "Steadiness on video clips" in page and "simulated pan-on clips" in page
    again = RunResult.from_dict(run.to_dict())
    assert again.video[0]["results"]["raw"]["frames"] == raw["frames"]
