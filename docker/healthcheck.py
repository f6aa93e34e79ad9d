"""Container health check: exit 0 only when the server's gRPC health service answers SERVING.

Docker's HEALTHCHECK (and so Compose) runs it inside the container; Kubernetes uses its native
gRPC probe instead. Usage: `healthcheck.py [TARGET]`, TARGET defaulting to 127.0.0.1 at the
server's port. It reads the server's settings from the same FEATVIZ_* variables as the server:
when the server speaks TLS, so does the check, trusting the server's certificate and expecting
it to name $FEATVIZ_HEALTHCHECK_TLS_NAME (default localhost), since the check reaches the server
by its loopback address rather than by the name it is known by.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from featviz_server.config import Settings

TIMEOUT_SECONDS = 3.0


def check(target: str, settings: Settings) -> bool:
    """True when `target` reports SERVING; the reason otherwise goes to stderr."""
    with _channel(target, settings) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=TIMEOUT_SECONDS
            )
        except grpc.RpcError as error:
            print(f"{target}: {error.code().name} {error.details()}", file=sys.stderr)
            return False
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{target}: {status}", file=sys.stderr)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _channel(target: str, settings: Settings) -> grpc.Channel:
    if settings.tls_cert is None:
        return grpc.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(root_certificates=settings.tls_cert.read_bytes())
    name = os.environ.get("FEATVIZ_HEALTHCHECK_TLS_NAME", "localhost")
    return grpc.secure_channel(target, credentials, [("grpc.ssl_target_name_override", name)])


if __name__ == "__main__":
    settings = Settings.from_env()
    target = sys.argv[1] if len(sys.argv) > 1 else f"127.0.0.1:{settings.port}"
    sys.exit(0 if check(target, settings) else 1)
