"""A lease in one Redis key: one holder at a time, renewed while it works, gone when it
stops renewing (it died) or releases it. Check, renew and release are each one script
(infra/lua/lease.lua), so a holder whose lease expired can never renew or delete another's.
"""

from __future__ import annotations

from importlib import resources

import redis.asyncio as aioredis

SCRIPT = (resources.files("executor.infra") / "lua" / "lease.lua").read_text()


class Lease:
    def __init__(self, redis: aioredis.Redis, key: str, token: str) -> None:
        self.key = key
        self.token = token
        self._script = redis.register_script(SCRIPT)

    async def hold(self, ttl_ms: int) -> bool:
        """Acquire or renew; True while this token holds the lease."""
        return bool(await self._script(keys=[self.key], args=[self.token, ttl_ms]) == 1)

    async def release(self) -> bool:
        """Give it up if held; True if it was."""
        return bool(await self._script(keys=[self.key], args=[self.token, 0]) == 1)
