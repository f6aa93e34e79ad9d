"""From the user's target(s), TLS choice and token to a gRPC channel and call metadata.

Several targets are replicas of one service: they become one channel whose `round_robin` load
balancing spreads calls over every address (gRPC's own client-side balancing, as used with a
Kubernetes headless Service). The same policy is set for a single target, so that a DNS name
resolving to several addresses (`dns:///featviz-headless:50051`) is balanced too.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

DEFAULT_TARGET = "localhost:50051"
TargetLike = str | Sequence[str]
TlsLike = bool | str | os.PathLike[str] | grpc.ChannelCredentials | None

_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def split_targets(target: TargetLike) -> list[str]:
    """The replicas named by `target`: a list, or one string, comma-separated unless it is a
    gRPC URI (e.g. ``ipv4:10.0.0.1:50051,10.0.0.2:50051`` is passed through whole)."""
    items = [target] if isinstance(target, str) else list(target)
    targets = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"target must be a string or a list of strings, got {item!r}")
        is_uri = item.strip().startswith(_SCHEMES)
        targets += [item.strip()] if is_uri else [t.strip() for t in item.split(",") if t.strip()]
    if not targets:
        raise ValueError("target must name at least one server, e.g. 'localhost:50051'")
    return targets


def channel_address(targets: Sequence[str]) -> tuple[str, list[tuple[str, Any]]]:
    """The gRPC target string and channel options for one or several replicas.

    Several `host:port` targets are resolved now into an `ipv4:`/`ipv6:` address list, the only
    way to hand gRPC a static set of replicas; the first target stays the authority (the name
    TLS checks the certificates against).
    """
    options: list[tuple[str, Any]] = [("grpc.lb_policy_name", "round_robin")]
    if len(targets) == 1:
        return targets[0], options
    addresses = [_resolve(target) for target in targets]
    versions = {ip.version for ip, _ in addresses}
    if len(versions) > 1:
        raise ValueError(f"targets mix IPv4 and IPv6 addresses: {', '.join(targets)}")
    listed = ",".join(
        f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}" for ip, port in addresses
    )
    options.append(("grpc.default_authority", targets[0]))
    return f"ipv{versions.pop()}:{listed}", options


def _resolve(target: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """The address and port of HOST:PORT; for a name, its first IPv4 address if it has one."""
    host, sep, port_text = target.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"target {target!r} is not HOST:PORT (several targets must all be)")
    port = int(port_text)
    try:
        return ipaddress.ip_address(host), port
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ValueError(f"target {target!r}: cannot resolve {host!r} ({error})") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return ipaddress.ip_address(infos[0][4][0]), port


def channel_credentials(tls: TlsLike) -> grpc.ChannelCredentials | None:
    """None for plaintext; TLS with the system's roots (True), a CA bundle file, or the given
    credentials."""
    if tls is None or tls is False:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    if isinstance(tls, grpc.ChannelCredentials):
        return tls
    return grpc.ssl_channel_credentials(root_certificates=Path(tls).read_bytes())


def open_channel(api: ModuleType, target: TargetLike, tls: TlsLike) -> Any:
    """A channel from `api` (`grpc` or `grpc.aio`, which share these two constructors)."""
    address, options = channel_address(split_targets(target))
    credentials = channel_credentials(tls)
    if credentials is None:
        return api.insecure_channel(address, options=options)
    return api.secure_channel(address, credentials, options=options)


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The bearer-token header the server's auth expects (none without a token)."""
    return (("authorization", f"Bearer {token}"),) if token else ()
