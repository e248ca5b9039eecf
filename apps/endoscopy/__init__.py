"""The endoscopy camera demo: live polyp segmentation on a camera, a video file, a clip folder or the synthetic sequence.

Built only on the public ``runtimes`` API and OpenCV, so it runs on a device without torch (a model name
goes through the torch runtime, which needs torch; a converted artifact does not).

Examples:
    >>> from edgeseg.apps.endoscopy import DemoConfig, run_demo
    >>> summary = run_demo(DemoConfig(artifact="exports/ultralightunet-s_fp32.xml", source="synthetic",
    ...                               headless=True, record="demo.avi", log="demo.jsonl", max_frames=100))
    >>> print(summary.text())

    $ edgeseg demo --artifact exports/ultralightunet-s_fp32.xml --headless --record demo.mp4
    $ edgeseg demo --model ultralightunet-s --source clips/clip-00 --headless --log demo.jsonl
    $ python -m edgeseg.apps.endoscopy.latency demo.jsonl
    $ python -m edgeseg.apps.endoscopy --model ultralightunet-s --source 0
"""

from __future__ import annotations

from edgeseg.apps.endoscopy.capture import (
    CameraSource,
    FolderSource,
    Frame,
    Source,
    SourceError,
    SourceLost,
    SyntheticSource,
    VideoFileSource,
    open_source,
)
from edgeseg.apps.endoscopy.grabber import LatestFrameGrabber
from edgeseg.apps.endoscopy.inference import Segmenter, open_segmenter
from edgeseg.apps.endoscopy.outputs import Outputs, Summary
from edgeseg.apps.endoscopy.overlay import HudInfo, MaskInfo, Region, analyse_mask, find_regions, render
from edgeseg.apps.endoscopy.pipeline import EXIT_CODES, DemoConfig, run_demo
from edgeseg.apps.endoscopy.serve import MjpegServer
from edgeseg.apps.endoscopy.step import FrameResult, FrameStep
from edgeseg.apps.endoscopy.timing import latency_report

__all__ = [
    "EXIT_CODES",
    "CameraSource",
    "DemoConfig",
    "FolderSource",
    "Frame",
    "FrameResult",
    "FrameStep",
    "HudInfo",
    "LatestFrameGrabber",
    "MaskInfo",
    "MjpegServer",
    "Outputs",
    "Region",
    "Segmenter",
    "Source",
    "SourceError",
    "SourceLost",
    "Summary",
    "SyntheticSource",
    "VideoFileSource",
    "analyse_mask",
    "find_regions",
    "latency_report",
    "open_segmenter",
    "open_source",
    "render",
    "run_demo",
]
