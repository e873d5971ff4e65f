"""The loops every worker runs beside the pipeline: the tracker (orders working at a
broker), reclaim and poison (requests of dead workers; messages that keep failing),
liveness, the positions projection, health probes and retention."""
