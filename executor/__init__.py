"""orderstream worker: validates, risk-checks and submits order requests from Redis Streams."""
