"""The safety state that stands between a request and a broker: the trading state (kill
switch), the circuit breaker, the shared rate limits (limits/) and the pre-trade risk
checks (risk/)."""
