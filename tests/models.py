"""OaaS classes shared by the tests."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import ClassVar, Optional

from pydantic import BaseModel

from oaas_sdk import OaasObject, oaas


class Address(BaseModel):
    city: str
    zip: str = ""


@oaas.service("Counter", package="test")
class Counter(OaasObject):
    count: int = 0
    history: list[str] = []
    tags: dict[str, int] = {}
    label: str = ""
    LIMIT: ClassVar[int] = 1000
    _scratch: int = 0

    @oaas.method()
    async def increment(self, amount: int = 1) -> int:
        self.count += amount
        self.history.append(f"+{amount}")
        return self.count

    @oaas.method()
    async def add_many(self, a: int, b: int = 2, *, c: int = 3) -> int:
        self.count += a + b + c
        return self.count

    @oaas.method()
    async def fail_after_change(self, amount: int) -> None:
        self.count += amount
        self.history.append("doomed")
        self.tags["doomed"] = 1
        raise RuntimeError("boom")

    @oaas.method()
    async def slow_increment(self, delay: float) -> int:
        before = self.count
        await asyncio.sleep(delay)
        self.count = before + 1
        return self.count

    @oaas.method()
    async def twice(self, amount: int) -> int:
        await self.increment(amount)  # re-entrant call through the same object
        return await self.increment(amount)

    @oaas.method()
    def sync_bump(self) -> int:
        self.count += 1
        return self.count

    @oaas.method(stateless=True)
    async def describe(self) -> str:
        return f"count={self.count}"

    @oaas.function()
    async def version() -> str:
        return "1.0"

    @oaas.getter("count")
    async def get_count(self) -> int: ...

    @oaas.setter()
    async def set_count(self, value: int) -> int: ...

    @oaas.getter("history")
    async def get_history(self) -> list[str]: ...


@oaas.service("Profile", package="test")
class Profile(OaasObject):
    name: str = ""
    born: Optional[datetime] = None
    address: Optional[Address] = None
    friends: list[str] = []
    best_friend: Optional[Profile] = None

    @oaas.method()
    async def move(self, address: Address) -> Address:
        self.address = address
        return address

    @oaas.method()
    async def rename(self, name: str) -> str:
        self.name = name
        return name
