"""Device-side inference: one Runtime interface over torch, onnxruntime, OpenVINO and LiteRT.

This package imports and runs without torch (a point-of-care device has numpy, a runtime and OpenCV).
"""
