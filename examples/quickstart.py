"""Quickstart: a Counter and a Greeter with accessors and pydantic models.

Run ``python -m examples.quickstart`` twice: the counter goes on from where it stopped,
because its state lives in the embedded store (``./.oaas`` unless ``OAAS_STORAGE`` says
otherwise).
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from oaas_sdk import OaasConfig, OaasObject, oaas


class GreetRequest(BaseModel):
    name: str


class GreetResponse(BaseModel):
    message: str
    greeted_before: int


@oaas.service("Counter", package="quickstart")
class Counter(OaasObject):
    count: int = 0
    history: list[str] = []

    @oaas.method()
    async def increment(self, amount: int = 1) -> int:
        self.count += amount
        self.history.append(f"+{amount}")  # in-place change: persisted too
        return self.count

    @oaas.getter("count")
    async def get_count(self) -> int: ...

    @oaas.setter()
    async def set_count(self, value: int) -> int: ...


@oaas.service("Greeter", package="quickstart")
class Greeter(OaasObject):
    greeted: dict[str, int] = {}

    @oaas.method()
    async def greet(self, req: GreetRequest) -> GreetResponse:
        before = self.greeted.get(req.name, 0)
        self.greeted[req.name] = before + 1
        return GreetResponse(message=f"Hello, {req.name}!", greeted_before=before)


async def main() -> None:
    oaas.configure(OaasConfig())  # OAAS_* environment, default store lmdb:./.oaas
    counter = Counter.load_or_create(1)
    greeter = Greeter.load_or_create("front-desk")

    runs = await counter.increment()
    print(f"counter: this is run {runs}; history {counter.history[-5:]}")
    resp = await greeter.greet({"name": "World"})  # a dict is converted to GreetRequest
    print(f"greeter: {resp.message} (greeted {resp.greeted_before} times before)")
    await counter.set_count(runs * 10)
    print(f"counter via accessors: {await counter.get_count()} (set to runs x 10)")
    await counter.set_count(runs)
    print(f"store: {oaas.stats()['store']}  implementation: {oaas.stats()['implementation']}")


if __name__ == "__main__":
    asyncio.run(main())
