"""Per-tenant request limit: FLEET_TENANT_RATE_PER_S requests a second, with bursts of
FLEET_TENANT_RATE_BURST, shared by all of a tenant's users and API keys.

GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp per
key): the "theoretical arrival time" moves forward by 1/rate per request; a
request is refused while it is more than (burst - 1)/rate ahead of now. One
number per tenant, one atomic step per request.

With Redis configured the state lives there (one Lua script, Redis' own clock),
so every API process draws from the same budget; otherwise each process keeps
its own (the bound is then per process). If Redis is unreachable the request is
let through and a warning logged: the limit protects the service, it must not
take it down.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from fastapi import Request

from fleet_cloud.api.errors import ApiError
from fleet_cloud.settings import Settings

log = logging.getLogger(__name__)

MAX_TENANTS = 100_000  # in-process memory bound

# KEYS[1] tenant key; ARGV: emission interval (s), burst tolerance (s). Returns
# "0" when allowed, else the seconds to wait, as a string (Lua numbers are doubles).
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
if tat - now > tolerance then return tostring(tat - now - tolerance) end
tat = tat + interval
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
return '0'
"""


class LocalGcra:
    """The in-process limiter: seconds to wait (0: go ahead) per key."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = 1.0 / rate_per_s
        self.tolerance = self.interval * (max(1, burst) - 1)
        self.clock = clock
        self._tat: dict[int, float] = {}

    def wait(self, key: int) -> float:
        now = self.clock()
        tat = max(self._tat.get(key, now), now)
        if tat - now > self.tolerance:
            return tat - now - self.tolerance
        if key not in self._tat and len(self._tat) >= MAX_TENANTS:
            self._sweep(now)
        self._tat[key] = tat + self.interval
        return 0.0

    def _sweep(self, now: float) -> None:
        # A key whose arrival time has passed holds no debt: forgetting it changes nothing.
        for k in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[k]
        while len(self._tat) >= MAX_TENANTS:
            del self._tat[next(iter(self._tat))]


class RedisGcra:
    def __init__(self, url: str, prefix: str, rate_per_s: float, burst: int) -> None:
        self.redis = aioredis.from_url(url)
        self.prefix = prefix
        self.interval = 1.0 / rate_per_s
        self.tolerance = self.interval * (max(1, burst) - 1)
        self._script = self.redis.register_script(_GCRA_LUA)

    async def wait(self, key: int) -> float:
        try:
            out = await self._script(
                keys=[f"{self.prefix}:rate:tenant:{key}"], args=[self.interval, self.tolerance]
            )
        except (aioredis.RedisError, OSError) as e:
            log.warning("tenant rate limit: redis unavailable (%s); request let through", e)
            return 0.0
        return float(out)


class TenantLimiter:
    def __init__(self, settings: Settings) -> None:
        self.rate = settings.tenant_rate_per_s
        self.local: LocalGcra | None = None
        self.shared: RedisGcra | None = None
        self.refused = 0  # requests answered 429 (exported as a metric)
        if self.rate <= 0:
            return
        if settings.redis_url:
            self.shared = RedisGcra(
                settings.redis_url, settings.redis_prefix, self.rate, settings.tenant_rate_burst
            )
        else:
            self.local = LocalGcra(self.rate, settings.tenant_rate_burst)

    async def check(self, tenant_id: int) -> None:
        """ApiError 429 (with Retry-After) when the tenant is over its rate."""
        if self.shared is not None:
            wait = await self.shared.wait(tenant_id)
        elif self.local is not None:
            wait = self.local.wait(tenant_id)
        else:
            return
        if wait > 0:
            self.refused += 1
            secs = max(1, math.ceil(wait))
            err = ApiError(
                429,
                "rate_limited",
                f"your organisation is over {self.rate:g} requests/s; retry in {secs} s",
            )
            err.headers = {"Retry-After": str(secs)}
            raise err


def tenant_limiter(request: Request) -> TenantLimiter:
    """The app's limiter, made on first use (settings are read once)."""
    state = request.app.state
    lim: TenantLimiter | None = getattr(state, "tenant_limiter", None)
    if lim is None:
        lim = state.tenant_limiter = TenantLimiter(state.settings)
    return lim
