"""Infrastructure: the order store and its Lua scripts (lua/), the Redis connection, the
attention index, leases, stream ids, secrets, logs, metrics, failpoints and the clock.
Below everything but the order model."""
