"""cifar10-serving's training job: data, augmentation, the seed CNN, training, ONNX export."""
