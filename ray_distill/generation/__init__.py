"""Generation at scale, without Ray: work items, rollouts, the exactly-once record store,
the stage driver and the trajectory filter. The Ray Data layer is `distributed/rollouts.py`."""
