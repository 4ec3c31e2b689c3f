"""The scenarios of issue 10, full size and a quick size for smoke runs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    name: str
    clients: int
    requests: int = 0  # chats per client, sent at once (0 for idle)
    tokens: int = 0  # deltas per chat
    interval_ms: int = 0  # upstream pace; 0 = as fast as it can
    ramp_ms: int = 0  # chats start spread over this time (random-looking phases)
    hold_s: float = 0.0  # idle: how long the connections stay open before RSS is read
    timeout_s: float = 180.0

    @property
    def idle(self) -> bool:
        return self.requests == 0

    def describe(self) -> str:
        if self.idle:
            return f"{self.clients} open connections, nothing sent"
        pace = f"{self.interval_ms} ms apart" if self.interval_ms else "as fast as possible"
        per = f" x {self.requests} requests" if self.requests > 1 else ""
        return f"{self.clients} clients{per} x {self.tokens} tokens, {pace}"


FULL = {
    "burst": Scenario("burst", clients=50, requests=2, tokens=500),
    "paced": Scenario("paced", clients=200, requests=1, tokens=300, interval_ms=20, ramp_ms=1000),
    "idle": Scenario("idle", clients=1000, hold_s=5.0),
}
QUICK = {
    "burst": Scenario("burst", clients=10, requests=2, tokens=100, timeout_s=60),
    "paced": Scenario(
        "paced", clients=40, requests=1, tokens=60, interval_ms=20, ramp_ms=500, timeout_s=60
    ),
    "idle": Scenario("idle", clients=100, hold_s=2.0, timeout_s=60),
}
WARMUP = Scenario("warmup", clients=4, requests=1, tokens=50, timeout_s=30)


def warmup_for(scenario: Scenario) -> Scenario:
    """The warm-up before ``scenario``: as many chats at once as it will run.

    A server's connection pools (upstream HTTP, Redis) grow to the peak number of chats in
    flight once and then keep their connections; opening them is a one-time cost, like the
    imports a first chat pays. Warming up with the scenario's concurrency measures every
    target in that steady state. Idle keeps the small warm-up: its RSS baseline is read after
    it, and a larger one would move RSS per connection.
    """
    if scenario.idle:
        return WARMUP
    return Scenario(
        "warmup", clients=scenario.clients, requests=scenario.requests, tokens=50, timeout_s=60
    )
