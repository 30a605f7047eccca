"""The sequencer: one writer per ledger, batching commands into single commits."""
