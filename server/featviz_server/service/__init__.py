"""The gRPC service: validation, scheduling, message encoding and the server around them."""
