"""Export stages: ONNX, TFLite, and the mobile bundle."""
