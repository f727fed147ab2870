"""Benchmarks on real servers: recovery after faults, side by side with baseline clients."""
