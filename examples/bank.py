"""Bank: accounts and concurrent transfers between them; total balance is conserved.

Every run opens (or creates) ten accounts, performs a burst of concurrent random transfers,
and checks that the sum of all balances is still the amount the bank started with. A
transfer that would overdraw raises inside the method: its changes are rolled back and
nothing is written. Run ``python -m examples.bank`` twice: balances carry over.
"""

from __future__ import annotations

import asyncio
import random
import sys

from oaas_sdk import OaasConfig, OaasObject, oaas

ACCOUNTS = 10
OPENING_BALANCE = 1_000


class InsufficientFunds(Exception):
    pass


@oaas.service("Account", package="bank")
class Account(OaasObject):
    owner: str = ""
    balance: int = 0
    ledger: list[str] = []

    @oaas.method()
    async def withdraw(self, amount: int, memo: str = "") -> int:
        self.ledger.append(f"-{amount} {memo}".strip())
        self.balance -= amount
        if self.balance < 0:
            raise InsufficientFunds(f"{self.owner}: balance would be {self.balance}")
        return self.balance

    @oaas.method()
    async def deposit(self, amount: int, memo: str = "") -> int:
        self.balance += amount
        self.ledger.append(f"+{amount} {memo}".strip())
        return self.balance


async def transfer(src: Account, dst: Account, amount: int) -> bool:
    """Move ``amount`` from ``src`` to ``dst``; False (nothing changed) when ``src`` is short."""
    try:
        await src.withdraw(amount, memo=f"to {dst.owner}")
    except InsufficientFunds:
        return False
    await dst.deposit(amount, memo=f"from {src.owner}")
    return True


async def main(transfers: int = 200) -> int:
    oaas.configure(OaasConfig())
    accounts = [Account.load_or_create(f"acct-{i}", owner=f"owner{i}", balance=OPENING_BALANCE)
                for i in range(ACCOUNTS)]
    await oaas.commit_all_async()
    expected = ACCOUNTS * OPENING_BALANCE
    rng = random.Random()
    results = await asyncio.gather(*(
        transfer(*rng.sample(accounts, 2), rng.randint(1, 400)) for _ in range(transfers)))
    total = sum(a.balance for a in accounts)
    done = sum(results)
    print(f"{done} transfers done, {transfers - done} refused (insufficient funds)")
    print("balances:", " ".join(f"{a.owner}={a.balance}" for a in accounts))
    print(f"ledger entries so far: {sum(len(a.ledger) for a in accounts)}")
    if total != expected:
        print(f"INVARIANT BROKEN: total {total} != {expected}", file=sys.stderr)
        return 1
    print(f"total balance {total} == {expected}: conserved")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
