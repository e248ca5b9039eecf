"""torch -> ONNX | OpenVINO IR | TFLite conversion, fp32/fp16/int8, verified against the FP32 reference."""
