"""One process serving several partitions of a partitioned deployment: a worker per
partition (its own prefix, consumer group, accounts, brokers and Redis client), one metrics
server for them all, and one stop for them all.

The workers share nothing but the process: each partition's accounts are served by its
own worker only (producer/partitions.py), so nothing one of them holds is another's.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from .config import Settings
from .infra.metrics import Metrics, partitions_registry, start_http
from .worker import Worker, settle_heap

log = logging.getLogger(__name__)


class PartitionHost:
    def __init__(self, settings: Settings, *, partitions: list[int] | None = None,
                 **worker_options: Any) -> None:
        self.settings = settings
        served = partitions if partitions is not None else settings.partitions.served()
        if not served:
            raise ValueError("a host serves at least one partition")
        self.workers = {n: Worker(settings, partition=n, metrics=Metrics(), **worker_options)
                        for n in served}
        self.metrics_port: int | None = None
        self._runner: Any = None

    @property
    def ready(self) -> bool:
        return all(worker.ready for worker in self.workers.values())

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def not_ready(self) -> str | None:
        """Why this process should not be sent traffic: the reasons of each partition's
        worker that is not ready, each named by its partition."""
        reasons = await asyncio.gather(*(worker.probe.not_ready()
                                         for worker in self.workers.values()))
        named = [f"partition {n}: {why}"
                 for n, why in zip(self.workers, reasons, strict=True) if why]
        return "; ".join(named) or None

    async def start(self, *, serve_metrics: bool = True) -> None:
        if serve_metrics:
            w = self.settings.worker
            registry = partitions_registry({str(n): worker.metrics.registry
                                            for n, worker in self.workers.items()})
            self._runner, self.metrics_port = await start_http(
                registry, w.metrics_host, w.metrics_port, ready=lambda: self.ready,
                not_ready=self.not_ready)
            log.info("metrics of partitions %s on http://%s:%d/metrics",
                     ", ".join(map(str, self.workers)), w.metrics_host, self.metrics_port)
        for worker in self.workers.values():
            await worker.start(serve_metrics=False)

    async def serve(self) -> None:
        """Serve every partition until stopped. A partition's worker that ends with an
        error stops the others: the process exits and its supervisor restarts it, rather
        than leaving some partitions unserved behind a process that looks alive."""
        tasks = [asyncio.create_task(worker.serve(), name=f"partition-{n}")
                 for n, worker in self.workers.items()]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            if any(not t.cancelled() and t.exception() is not None for t in done):
                self.stop()
            # The others drain what they hold (they stop as on SIGTERM), then the first
            # error is raised.
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        finally:
            for task in tasks:
                task.cancel()

    async def close(self) -> None:
        for worker in self.workers.values():
            await worker.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def run(self) -> None:
        try:
            await self.start()
            settle_heap()
            await self.serve()
        finally:
            await self.close()
