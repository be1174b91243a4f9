"""The Open Inference Protocol (KServe v2) as the served model speaks it, whichever door
carries it: the tensors (``tensors``), the descriptions of the server and model
(``descriptions``) and the statistics (``statistics``). The gRPC door
(``cifar10_serving.grpc_api.inference``) and the REST door (``cifar10_serving.http_api.oip``)
only translate these to and from their wire forms."""
