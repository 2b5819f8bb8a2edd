"""The worker simulator (`fleetserve serve --simulate PROFILE`): the runtime with its model forward
replaced by a timed GPU cost model, for testing and benchmarking routing at scale (docs/simulator.md)."""
