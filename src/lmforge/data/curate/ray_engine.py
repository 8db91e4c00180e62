"""The Ray engine: the same stages, shards and steps as the local engine, scheduled by Ray Data.

Each pending (stage, shard) unit becomes one row of a Ray dataset, mapped by ``run_shard`` on whichever
node is free; the global decisions and the statistics are made on the driver, exactly as locally, so
both engines write identical output. On a multi-node cluster the output folder must be on storage every
node sees (NFS, a mounted bucket). Connects to ``RAY_ADDRESS`` when set, else starts a local Ray.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from lmforge.data.curate.pipeline import ENGINES, LocalRun, run_shard
from lmforge.errors import LmforgeError


class RayRun(LocalRun):
    @staticmethod
    def default_workers() -> int | None:
        return None  # every CPU Ray sees

    def _start(self):
        try:
            import ray
        except ImportError:
            raise LmforgeError("--engine ray needs Ray; `pip install 'lmforge[ray]'`") from None
        self._started_here = not ray.is_initialized()
        if self._started_here:
            ray.init(num_cpus=self.workers or None, include_dashboard=False, log_to_driver=False,
                     ignore_reinit_error=True)
        ray.data.DataContext.get_current().enable_progress_bars = False
        return ray

    def _stop(self, ray) -> None:
        if self._started_here:
            ray.shutdown()

    def _map(self, ray, stage: int, pending: list[tuple[int, list[str]]]) -> Iterator[dict]:
        if not pending:
            return
        pipeline, work = self.pipeline, str(self.work)

        def unit(row: dict) -> dict:
            result = run_shard(pipeline, stage, int(row["shard"]), [str(f) for f in row["files"]], Path(work))
            return {"result": json.dumps(result)}

        rows = [{"shard": shard, "files": files} for shard, files in pending]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map(unit)
        for row in dataset.iter_rows():
            yield json.loads(row["result"])


ENGINES["ray"] = RayRun
