"""cifar10_core: what training, the server and the clients share.

The model contract (``contract``), the one image conversion (``images``), the error types
(``errors``) and the CIFAR-10 readers (``datasets``). Depends on numpy and Pillow only:
never grpc, onnxruntime or TensorFlow (tests/test_layering.py checks it).
"""
