"""Open-loop latency benchmark: the gateway and a bare grpc.aio echo at fixed fractions of the gateway's saturation."""
