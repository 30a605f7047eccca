"""Storage adapters implementing `tally.engine.ports.Store`."""
