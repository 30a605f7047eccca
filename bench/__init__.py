"""tally's benchmarks: run on purpose (`python -m bench.engine`), never as timed tests."""
