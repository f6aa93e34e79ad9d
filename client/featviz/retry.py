"""When a failed call is tried again, and after how long.

Only failures that say "not now" are retried: RESOURCE_EXHAUSTED with the server's RetryInfo
(its queue was full, or its device ran out of memory for a batch the run shared; a run that does
not fit even alone says so without RetryInfo), and UNAVAILABLE (the server could not be reached,
is draining, or died). Either after updates arrived means the run ended early: it is
resubmitted from the start. Runs are deterministic (same request, same seed, same images: to
the last bit on the CPU) and read-only, so resubmitting is safe and gives the result the first
replica would have given.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from featviz.errors import FeatvizError, Overloaded, Unavailable


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; the server's `RetryInfo` delay is a lower bound.

    Example::

        client = featviz.Client("localhost:50051", retries=featviz.RetryPolicy(retries=10))
        print(client.describe_model().model_name)
    """

    retries: int = 5
    initial_backoff: float = 0.25
    max_backoff: float = 10.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("retries and backoffs must be >= 0")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")

    def delay(
        self, attempt: int, error: FeatvizError, time_left: float | None = None
    ) -> float | None:
        """Seconds to wait before trying again after failed attempt `attempt` (1-based), or None
        to give up: not retryable, out of retries, or not enough `time_left` before the deadline.
        """
        retryable = isinstance(error, Unavailable) or (
            isinstance(error, Overloaded) and error.retry_delay is not None
        )
        if not retryable or attempt > self.retries:
            return None
        backoff = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        # Jitter keeps many clients turned away together from coming back together.
        delay = max(backoff, error.retry_delay or 0.0) * random.uniform(1.0, 1.5)
        return None if time_left is not None and delay >= time_left else delay
