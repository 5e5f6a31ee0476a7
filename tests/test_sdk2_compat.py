"""The Counter, Greeter and accessor examples of oaas-sdk2-py 0.3.6's README run unchanged
except for the import line (``oaas_sdk2_py`` -> ``oaas_sdk``)."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from oaas_sdk import OaasConfig, oaas

# oaas-sdk2-py README, "Basic Service Definition" (Greeter with accessors), import line changed.
GREETER = '''
from oaas_sdk import oaas, OaasObject, OaasConfig
from pydantic import BaseModel

# Configure OaaS
config = OaasConfig(async_mode=True, mock_mode=False)
oaas.configure(config)

# Define request/response models
class GreetRequest(BaseModel):
    name: str

class GreetResponse(BaseModel):
    message: str

# Define your service
@oaas.service("Greeter", package="example")
class Greeter(OaasObject):
    counter: int = 0
    
    @oaas.method()
    async def greet(self, req: GreetRequest) -> GreetResponse:
        return GreetResponse(message=f"Hello, {req.name}!")
    
    @oaas.method()
    async def count_greetings(self) -> int:
        self.counter += 1
        return self.counter
    
    @oaas.method()
    async def is_popular(self, threshold: int = 10) -> bool:
        return self.counter > threshold

    # Accessor methods (not exported as RPC functions)
    @oaas.getter()
    async def get_counter(self) -> int: ...

    @oaas.setter()
    async def set_counter(self, value: int) -> int: ...

# Usage
async def main():
    # Create and use locally
    greeter = Greeter.create(local=True)
    
    # Test with different types
    response = await greeter.greet(GreetRequest(name="World"))
    count = await greeter.count_greetings()  # Returns int
    popular = await greeter.is_popular(5)     # Returns bool
    current_counter = await greeter.get_counter()  # Accessor getter
    _ = await greeter.set_counter(42)             # Accessor setter
    
    print(f"{response.message} (Count: {count}, Popular: {popular})")
'''

# oaas-sdk2-py README, "Counter Service with State", import line changed; the usage lines
# (top-level awaits in the README) are wrapped in main() to run.
COUNTER = '''
from oaas_sdk import oaas, OaasObject

@oaas.service("Counter", package="example")
class Counter(OaasObject):
    count: int = 0
    history: list = []

    @oaas.method()
    async def increment(self, amount: int = 1) -> int:
        """Increment counter by amount."""
        self.count += amount
        self.history.append(f"Added {amount}")
        return self.count

    @oaas.method()
    async def reset(self) -> bool:
        """Reset counter to zero."""
        self.count = 0
        self.history.clear()
        return True

    # Accessors for the state fields
    @oaas.getter()
    async def get_count(self) -> int: ...

    @oaas.setter()
    async def set_count(self, value: int) -> int: ...

    @oaas.getter("history")
    async def get_history(self) -> list:
        ...

async def main():
    counter = Counter.create(local=True)
    value = await counter.increment(5)     # Returns int: 5
    current = await counter.get_count()    # Accessor getter: 5
    history = await counter.get_history()  # Accessor getter: ["Added 5"]
    reset = await counter.reset()          # Returns bool: True
    await counter.set_count(5)             # Accessor setter: set to 5
    value = await counter.get_count()      # Accessor getter: 5
    return value, current, history, reset
'''

# oaas-sdk2-py README, "Why use accessors over methods?" (after), in a service class.
ACCESSOR = '''
from oaas_sdk import oaas, OaasObject

@oaas.service("Tally", package="example")
class Tally(OaasObject):
    count: int = 0

    @oaas.method()
    async def bump(self) -> int:
        self.count += 1
        return self.count

    @oaas.getter("count")
    async def get_count(self) -> int:
        ...  # body not required; semantics = read persisted field

async def main():
    t = Tally.create(local=True)
    await t.bump()
    await t.bump()
    return await t.get_count()
'''


def _exec(src: str) -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": "sdk2_example"}
    exec(compile(textwrap.dedent(src), "<sdk2-readme>", "exec", dont_inherit=True), ns)
    return ns


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the Greeter example uses the default store ./.oaas
    monkeypatch.delenv("OAAS_STORAGE", raising=False)
    yield tmp_path
    oaas.configure(OaasConfig(mock_mode=True, native="off"))


async def test_greeter_example(in_tmp, capsys):
    ns = _exec(GREETER)
    await ns["main"]()
    assert capsys.readouterr().out.strip() == "Hello, World! (Count: 1, Popular: False)"
    assert (in_tmp / ".oaas" / "data.mdb").exists()


async def test_counter_example(mock_oaas):
    ns = _exec(COUNTER)
    value, current, history, reset = await ns["main"]()
    assert (value, current, history, reset) == (5, 5, ["Added 5"], True)


async def test_accessor_example(mock_oaas):
    ns = _exec(ACCESSOR)
    assert await ns["main"]() == 2


async def test_mock_mode_testing_example(mock_oaas):
    # oaas-sdk2-py README, "Testing with Mock Mode", against the Counter above
    ns = _exec(COUNTER)
    counter = ns["Counter"].create(local=True)
    result = await counter.increment(10)
    assert result == 10
    assert isinstance(result, int)
    history = await counter.get_history()
    assert history == ["Added 10"]
    assert isinstance(history, list)
    reset_result = await counter.reset()
    assert reset_result is True
    assert isinstance(reset_result, bool)


async def test_server_and_agent_management(mock_oaas):
    ns = _exec(COUNTER)
    Counter = ns["Counter"]
    oaas.start_server(port=8080)
    agent_id = await oaas.start_agent(Counter, obj_id=123)
    assert oaas.is_server_running()
    assert agent_id in oaas.list_agents()
    await oaas.stop_agent(agent_id)
    assert oaas.list_agents() == {}
    oaas.stop_server()
    assert not oaas.is_server_running()
