"""The order model: an order and its states, positions, and what a broker reports of an
order. Pure: no I/O, and nothing of the rest of the executor."""
