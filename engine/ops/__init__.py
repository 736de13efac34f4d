"""Operations: what ops run beside live traffic, built on the decision log.

- `logstats`: usage, cost, latency, errors, cache, quotas and feedback from a log (`engine stats`).
- `timeseries` and `report`: the data and the charts of the offline HTML report (`engine report`).
- `replay`: re-decide logged requests under another policy (`engine replay`).
- `workload` and `demo`: the offline demo's traffic and its run (`engine demo`).

Nothing here imports click or rich; the commands in `engine.cli` render what these return.
"""
