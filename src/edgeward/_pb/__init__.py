"""Generated protobuf and gRPC modules (tools/gen_proto.py); never edit by hand."""
