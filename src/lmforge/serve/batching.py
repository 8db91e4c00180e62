"""A small async batching queue: requests arriving within a few milliseconds run as one batch.

One worker takes the first waiting request, keeps collecting for ``window_ms``
(or until ``max_batch_size``), and hands the batch to the generation function on
a single background thread, so the model runs one batch at a time while the
event loop keeps accepting requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from lmforge.serve.generation import GenerateFn, GenerationOutput, GenerationRequest


class BatchQueue:
    def __init__(self, generate: GenerateFn, max_batch_size: int = 8, window_ms: float = 5.0):
        self.generate = generate
        self.max_batch_size = max(1, max_batch_size)
        self.window_s = window_ms / 1000.0
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmforge-generate")
        self.batch_sizes: Counter[int] = Counter()  # how many batches ran at each size

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
        self.executor.shutdown(wait=True)

    async def submit(self, request: GenerationRequest) -> tuple[GenerationOutput, int]:
        """Queue a request; returns its output and the size of the batch it ran in."""
        assert self.queue is not None, "BatchQueue.start() was not awaited"
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((request, future))
        return await future

    async def _collect(self) -> list[tuple[GenerationRequest, asyncio.Future]]:
        batch = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + self.window_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                batch.append(self.queue.get_nowait() if remaining <= 0 else
                             await asyncio.wait_for(self.queue.get(), remaining))
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            requests = [request for request, _ in batch]
            self.batch_sizes[len(batch)] += 1
            try:
                outputs = await loop.run_in_executor(self.executor, self.generate, requests)
            except Exception as exc:  # a failed batch fails its requests, never the server
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), output in zip(batch, outputs):
                if not future.done():
                    future.set_result((output, len(batch)))
