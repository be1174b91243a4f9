"""The gRPC door: our cifar10.v2 API and the Open Inference Protocol over one grpc.aio server."""
