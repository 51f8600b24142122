"""Benchmarks of flux-mcp against its own Flux API emulator (and, optionally, the vendor's server).

Run `python -m benchmarks [--quick] [--vs-vendor]`: it prints a table and a final `JSON: {...}` line.
Measurements (issue 7): per-call overhead, concurrency, turns and upstream polls per image, bytes
to the model per image, cold start, memory, and how soon waits end when they must (the timings
the tests prove by behaviour, issue 14). Nothing here asserts a time: CI runs `--quick` only
to prove the suite still runs.
"""
