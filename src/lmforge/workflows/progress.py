"""How a workflow reports progress without knowing who is watching: the CLI passes a rich progress bar, a notebook
nothing."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterator

# ``progress(description, total)`` opens a bar and yields ``advance(n=1)``; ``advance.set_total(n)`` fixes the total.
Progress = Callable[[str, "int | None"], ContextManager[Callable[..., None]]]


@contextlib.contextmanager
def no_progress(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    def advance(n: int = 1) -> None:
        pass

    advance.set_total = lambda n: None  # type: ignore[attr-defined]
    yield advance
