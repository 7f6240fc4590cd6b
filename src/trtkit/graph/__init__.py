"""ONNX in, ONNX out: export, inspect, reshape, fusion, quantize, fp16 conversion, add-nms.

No module here calls TensorRT; engines are ``trtkit.engine``'s.
"""
