"""The bound on images the gateway has accepted and not yet answered, for both backends.

A request that would take the backlog past its limit is refused at once (429) before its images are even
decoded, so overload never turns into unbounded memory growth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from service.errors import CodedError


class QueueFull(CodedError):
    CODE = "overloaded"

    def __init__(self, depth: int, limit: int) -> None:
        self.depth, self.limit = depth, limit
        super().__init__(
            f"the server is busy ({depth} images are already in progress, limit {limit}): retry with backoff"
        )

    def __reduce__(self) -> tuple[type[QueueFull], tuple[int, int]]:
        return type(self), (self.depth, self.limit)


class Backlog:
    def __init__(self, limit: int, on_depth: Callable[[int], None] = lambda depth: None) -> None:
        self.limit = limit
        self.depth = 0
        self._on_depth = on_depth

    def check_room(self) -> None:
        """Raise :class:`QueueFull` if not even one more image fits: a request can be refused before its
        body is read (which on a flooded server costs more than the refusal itself)."""
        if self.depth >= self.limit:
            raise QueueFull(self.depth, self.limit)

    @contextmanager
    def hold(self, count: int) -> Iterator[None]:
        """Count ``count`` images in for the duration of the block, or raise :class:`QueueFull`."""
        if self.depth + count > self.limit:
            raise QueueFull(self.depth, self.limit)
        self.depth += count
        self._on_depth(self.depth)
        try:
            yield
        finally:
            self.depth -= count
            self._on_depth(self.depth)
