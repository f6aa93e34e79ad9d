"""How far two float32 computations of the conv base may differ, for the parity tests."""


def float32_bound(scale: float) -> float:
    """The largest |difference| allowed between two float32 computations of a layer whose
    largest value is `scale`.

    Each layer sums 1,152-4,608 float32 products per value, in an order that depends on the
    CPU's kernels: against a float64 forward pass, either side drifts by up to ~1.5e-6 of the
    layer's largest value on some CPUs (PyTorch on an AVX2 AMD EPYC). The bound is 1e-5 of it
    (at least 1e-3): far below what a wrong mean, channel order or weight gives (tens to
    thousands).
    """
    return max(1e-3, 1e-5 * scale)
