"""Generated protobuf and gRPC modules of the featviz.v1 API: run proto/generate.sh."""
