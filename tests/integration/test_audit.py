import redis.asyncio as aioredis

from executor.infra import audit
from producer.keys import Keys


async def test_an_entry_is_written_with_its_change(redis_client: aioredis.Redis) -> None:
    r = redis_client
    keys = Keys()
    async with r.pipeline(transaction=True) as pipe:
        pipe.hset(keys.trading, "global", "halted")
        audit.add(pipe, keys, audit.AuditEntry(kind="trading_state", scope="global", at=1,
                                               by=audit.operator(),
                                               details={"state": "halted"}))
        await pipe.execute()
    [entry] = await audit.read(r, keys)
    assert (entry.kind, entry.scope, entry.details) == ("trading_state", "global",
                                                        {"state": "halted"})
    assert "@" in entry.by
    assert await r.hget(keys.trading, "global") == b"halted"
