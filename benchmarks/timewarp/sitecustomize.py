"""Time compression for a server process the benchmark cannot configure (the vendor's).

Put this folder on PYTHONPATH and set FLUX_BENCH_TIME_SCALE=k: every `asyncio.sleep(d)` in that
process then sleeps d*k, so a server-side pause keeps its ratio to the compressed upstream latency.
"""

import os

_SCALE = float(os.environ.get("FLUX_BENCH_TIME_SCALE") or 1.0)

if _SCALE != 1.0:
    import asyncio
    from typing import Any

    _real_sleep = asyncio.sleep

    async def _scaled_sleep(delay: float, result: Any = None) -> Any:
        return await _real_sleep(delay * _SCALE, result)

    asyncio.sleep = _scaled_sleep
