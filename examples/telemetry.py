"""Telemetry: sensor objects taking a stream of readings, with list, dict and bytes fields.

Each sensor keeps a bounded window of recent readings (list), per-minute aggregates (dict),
and the last raw frame it received (bytes). Readings are committed in the background with
group commit. Run ``python -m examples.telemetry`` twice: counts and aggregates carry over.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time

from oaas_sdk import OaasConfig, OaasObject, oaas

WINDOW = 64


@oaas.service("Sensor", package="telemetry")
class Sensor(OaasObject):
    kind: str = "temperature"
    readings: list[float] = []
    per_minute: dict[int, float] = {}
    samples: int = 0
    last_frame: bytes = b""

    @oaas.method()
    async def record(self, value: float, frame: bytes = b"") -> float:
        """Append one reading; returns the moving average over the window."""
        self.readings.append(value)
        if len(self.readings) > WINDOW:
            del self.readings[: len(self.readings) - WINDOW]
        minute = int(time.time() // 60)
        self.per_minute[minute] = round(self.per_minute.get(minute, 0.0) + value, 6)
        self.samples += 1
        if frame:
            self.last_frame = frame
        return sum(self.readings) / len(self.readings)

    @oaas.method(stateless=True)
    async def summary(self) -> dict[str, float]:
        r = self.readings
        return {"samples": self.samples, "mean": sum(r) / len(r) if r else 0.0,
                "min": min(r, default=0.0), "max": max(r, default=0.0)}


async def main(sensors: int = 4, readings: int = 250) -> None:
    oaas.configure(OaasConfig())
    fleet = [Sensor.load_or_create(f"sensor-{i}") for i in range(sensors)]
    start = time.perf_counter()
    for _ in range(readings):
        await asyncio.gather(*(
            s.record(20 + 5 * math.sin((s.samples + i) / 10),
                     struct.pack("<Id", s.samples, time.time()))
            for i, s in enumerate(fleet)))
    elapsed = time.perf_counter() - start
    n = sensors * readings
    print(f"{n} readings in {elapsed:.2f}s ({n / elapsed:,.0f}/s, committed as they came)")
    for s in fleet:
        summ = await s.summary()
        seq = struct.unpack("<Id", s.last_frame)[0] if s.last_frame else -1
        print(f"{s.object_id}: {summ['samples']:.0f} samples total, window mean "
              f"{summ['mean']:.2f}, last frame #{seq}, {len(s.per_minute)} minute buckets")
    st = oaas.stats()
    print(f"commits {st['commits']}, batches {st['batches']}, "
          f"mean batch {st['mean_batch_size']:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
