"""Benchmarks behind `vbank bench NAME --json`: each prints one JSON object and measures a
baseline in the same run (a bare aiohttp relay, raw hashlib, raw AES-GCM, the raw face
library), because these machines are noisy and only same-run ratios mean something."""
