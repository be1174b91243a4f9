"""cifar10-serving: the model server. Never imports TensorFlow, Keras or tf2onnx."""

__version__ = "0.1.0"
