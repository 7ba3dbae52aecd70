"""Export trained PyTorch models to annotated ONNX/TFLite bundles, and make them sparser."""
