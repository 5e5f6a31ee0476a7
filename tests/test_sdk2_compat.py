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
    oaas.start_server(port=0)  # 8080 in oaas-sdk2-py's README; any free port here
    agent_id = await oaas.start_agent(Counter, obj_id=123)
    assert oaas.is_server_running()
    assert agent_id in oaas.list_agents()
    await oaas.stop_agent(agent_id)
    assert oaas.list_agents() == {}
    oaas.stop_server()
    assert not oaas.is_server_running()


# -- behaviours oaas-sdk2-py code relies on ------------------------------------------------
# Written for oaas-sdk (not copied from oaas-sdk2-py's tests); each runs on both
# implementations and both stores through the ``sdk`` fixture.

import asyncio  # noqa: E402
import logging  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Optional  # noqa: E402

from oaas_sdk import (  # noqa: E402
    DebugLevel,
    DecoratorError,
    OaasObject,
    ObjectNotFound,
    Session,
    StateDescriptor,
    ValidationError,
    configure_debug,
    get_debug_context,
    getter,
    ref,
    set_debug_level,
)
from oaas_sdk.errors import SerializationError  # noqa: E402


@oaas.service("Tally", package="compat")
class Tally(OaasObject):
    count: int = 0
    notes: list[str] = []
    _attempts: int = 0

    @oaas.method()
    def bump(self, by: int = 1) -> int:
        self.count += by
        return self.count

    @oaas.method()
    async def abump(self) -> int:
        return self.bump(10)  # a sync method of the same object, inside this call's turn

    @oaas.method()
    async def hold(self, started: asyncio.Event, release: asyncio.Event) -> None:
        self.count += 100
        started.set()
        await release.wait()

    @oaas.getter("count")
    def read_count(self) -> int:
        return -1  # not run

    @oaas.setter("count")
    def write_count(self, value: int) -> int:
        return -1  # not run

    @getter()
    async def get_notes(self) -> list[str]:
        return []

    @oaas.method(retry_count=2, retry_delay=0.001)
    def flaky(self, fail_times: int) -> int:
        self._attempts += 1
        self.notes.append(f"try {self._attempts}")  # rolled back on each failure
        if self._attempts <= fail_times:
            raise ValueError(f"attempt {self._attempts} failed")
        return self._attempts

    @oaas.method(retry_count=1, retry_delay=0.001)
    async def aflaky(self) -> None:
        self.count += 1
        raise KeyError("always")

    @oaas.method()
    def no_retry(self) -> None:
        raise ValueError("plain")

    @oaas.function(retry_count=1, retry_delay=0.001)
    async def broken() -> None:
        raise RuntimeError("function failed")


@oaas.service("Owner", package="compat")
class Owner(OaasObject):
    pet: Optional[Tally] = None


class SubTally(Tally):
    @getter("count")
    def peek(self) -> int: ...


async def test_sync_method_getter_and_setter_return_values_in_a_running_loop(sdk):
    t = Tally.create(obj_id=1)
    assert t.bump(2) == 2  # no await: a sync method returns its value
    assert t.write_count(7) == 7
    assert t.read_count() == 7
    sdk.reconfigure()
    assert Tally.load(1).count == 7  # the sync setter committed before returning


async def test_sync_method_called_inside_an_async_method_of_the_same_object(sdk):
    t = Tally.create(obj_id=2)
    assert await t.abump() == 10
    sdk.reconfigure()
    assert Tally.load(2).count == 10


async def test_sync_method_refuses_to_interleave_with_a_suspended_call(sdk):
    t = Tally.create(obj_id=3)
    started, release = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(t.hold(started, release))
    await asyncio.wait_for(started.wait(), timeout=5)
    with pytest.raises(RuntimeError, match="holds its turn"):
        t.bump()
    release.set()
    await asyncio.wait_for(task, timeout=5)
    assert t.bump() == 101  # the turn is free again


async def test_session_commit_async_commits_changed_objects(sdk):
    sdk.reconfigure(auto_commit=False)
    t = Tally.create(obj_id=4)
    u = Tally.create(obj_id=5)
    t.count, u.count = 1, 2
    assert isinstance(t.session, Session) and t.session == u.session
    await t.session.commit_async()  # commits u as well, as an oaas-sdk2-py session did
    t.count = 3
    t.session.commit()
    sdk.reconfigure()
    assert (Tally.load(4).count, Tally.load(5).count) == (3, 2)


async def test_session_after_delete_and_of_a_replaced_configuration(sdk):
    t = Tally.create(obj_id=6)
    await t.commit_async()
    t.delete()
    await t.session.commit_async()  # nothing left to do: the delete is done
    with pytest.raises(ObjectNotFound):
        Tally.load(6)
    old = t.session
    sdk.reconfigure()
    from oaas_sdk import ConfigError

    with pytest.raises(ConfigError, match="replaced"):
        await old.commit_async()


def test_accessor_specs_by_attribute_name():
    specs = Tally._oaas_accessors
    assert set(specs) == {"read_count", "write_count", "get_notes"}
    assert specs["read_count"].field_name == "count" and specs["read_count"].kind == "getter"
    assert specs["write_count"].field_name == "count" and specs["write_count"].kind == "setter"
    assert specs["get_notes"].field_name == "notes"  # inferred from get_<field>
    assert set(SubTally._oaas_accessors) == {"read_count", "write_count", "get_notes", "peek"}
    assert "peek" not in Tally._oaas_accessors
    assert "bump" not in specs  # methods are not accessors


async def test_retries_exhausted_raise_decorator_error(sdk):
    t = Tally.create(obj_id=7)
    assert t.flaky(2) == 3  # two failures, then success on the last allowed attempt
    assert t.notes == ["try 3"]  # each failed attempt's changes were rolled back
    t._attempts = 0
    with pytest.raises(DecoratorError, match="failed after 3 attempts") as info:
        t.flaky(5)
    assert info.value.attempts == 3
    assert isinstance(info.value.last_error, ValueError)
    assert isinstance(info.value.__cause__, ValueError)
    assert t.notes == ["try 3"]
    with pytest.raises(DecoratorError, match="aflaky failed after 2 attempts"):
        await t.aflaky()
    assert t.count == 0
    with pytest.raises(DecoratorError, match="broken failed after 2 attempts"):
        await Tally.broken()
    with pytest.raises(ValueError, match="plain"):  # no retries: the error itself
        t.no_retry()


async def test_reference_assigned_as_tuple_dict_or_metadata(sdk):
    pet = Tally.create(obj_id=8)
    pet.count = 5
    await pet.commit_async()
    o = Owner.create(obj_id=1)
    o.pet = (pet.meta.cls_id, pet.meta.partition_id, pet.object_id)
    assert o.pet is pet
    o.pet = None
    o.pet = {"cls_id": "compat.Tally", "object_id": 8}
    assert o.pet is pet
    o.pet = None
    o.pet = pet.meta
    assert o.pet is pet
    o.pet = ref("compat.Tally", 8)
    assert o.pet is pet
    await o.commit_async()
    sdk.reconfigure()
    assert Owner.load(1).pet.count == 5
    o = Owner.load(1)
    for bad in [("compat.Tally", 0), ("compat.Tally", 0, "Bad Id!"), {"cls_id": "compat.Tally"},
                ("compat.Tally", "zero", 8)]:
        with pytest.raises(ValidationError, match="pet"):
            o.pet = bad
    assert o.pet.count == 5  # the field kept its value


class _Slots:
    """An object keeping encoded state by index, as oaas-sdk2-py's BaseObject did."""

    count = StateDescriptor("count", int, 0, 0)
    when = StateDescriptor("when", Optional[datetime], None, 1)
    tags = StateDescriptor("tags", list[str], [], 2)

    def __init__(self) -> None:
        self.data: dict[int, bytes] = {}

    def get_data(self, index: int) -> bytes | None:
        return self.data.get(index)

    def set_data(self, index: int, data: bytes) -> None:
        self.data[index] = data


def test_state_descriptor_reads_writes_and_converts():
    s = _Slots()
    assert (s.count, s.when, s.tags) == (0, None, [])
    s.count = "41"  # type: ignore[assignment]
    s.count += 1
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    s.when = when
    s.tags = ("a", "b")  # type: ignore[assignment]
    fresh = _Slots()
    fresh.data = dict(s.data)  # read back from the bytes alone
    assert (fresh.count, fresh.when, fresh.tags) == (42, when, ["a", "b"])
    d = _Slots.count
    assert isinstance(d, StateDescriptor) and d.private_name == "_state_count"
    assert d._convert_value(42.9) == 42 and d._convert_value(True) == 1
    assert d._deserialize(d._serialize(7)) == 7


def test_state_descriptor_refuses_bad_values_and_bytes():
    s = _Slots()
    s.count = 3
    with pytest.raises(ValidationError, match="count"):
        s.count = "three"  # type: ignore[assignment]
    with pytest.raises(ValidationError, match="when"):
        s.when = "not a date"  # type: ignore[assignment]
    assert s.count == 3 and s.get_data(1) is None  # nothing written
    fresh = _Slots()
    fresh.data = {0: b"\xc1"}  # 0xc1 is never valid MessagePack
    with pytest.raises(SerializationError, match="count"):
        fresh.count  # noqa: B018
    with pytest.raises(TypeError):
        StateDescriptor("sock", type(logging), None, 0)


def test_debug_level_sets_the_sdk_logger():
    logger = logging.getLogger("oaas_sdk")
    level, disabled = logger.level, logger.disabled
    try:
        configure_debug(level=DebugLevel.DEBUG, performance_monitoring=True)
        assert logger.level == logging.DEBUG and not logger.disabled
        assert get_debug_context().performance_monitoring
        set_debug_level(DebugLevel.ERROR)
        assert logger.level == logging.ERROR
        set_debug_level(DebugLevel.NONE)
        assert logger.disabled
        with pytest.raises(TypeError, match="DebugLevel"):
            set_debug_level("DEBUG")  # type: ignore[arg-type]
    finally:
        logger.setLevel(level)
        logger.disabled = disabled
        get_debug_context().level = DebugLevel.INFO
        get_debug_context().enabled = True


async def test_invoke_waits_for_the_turn_of_a_sync_method_or_setter(sdk):
    """What an invocation server uses: a sync method or setter invoked from async code
    waits for a suspended call on the object instead of raising."""
    from oaas_sdk.methods import invoke

    t = Tally.create(obj_id=9)
    started, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(t.hold(started, release))
    await asyncio.wait_for(started.wait(), timeout=5)
    specs = Tally._oaas_methods
    bump = asyncio.create_task(invoke(t, specs["bump"], (1,), {}))
    via_ref = asyncio.create_task(t.as_ref().bump(2))  # ObjectRef calls use invoke() too
    put = asyncio.create_task(invoke(t, specs["write_count"], ("500",), {}))
    await asyncio.sleep(0)  # let them start: they wait for the turn hold() keeps
    assert not bump.done() and not via_ref.done() and not put.done() and t.count == 100
    release.set()
    assert await asyncio.wait_for(bump, timeout=5) == 101  # ran after hold() finished
    assert await asyncio.wait_for(via_ref, timeout=5) == 103
    assert await asyncio.wait_for(put, timeout=5) == 500
    await asyncio.wait_for(holder, timeout=5)
    assert await invoke(t, specs["read_count"], (), {}) == 500
    with pytest.raises(DecoratorError):  # a function, invoked on the class
        await invoke(Tally, specs["broken"], (), {})
    sdk.reconfigure()
    assert Tally.load(9).count == 500


async def test_module_level_conveniences(sdk):
    from oaas_sdk import (
        ConfigError,
        ConfigurationError,
        OaasError,
        SessionError,
        configure_oaas,
        create_object,
        disable_auto_commit,
        enable_auto_commit,
        load_object,
    )

    t = create_object(Tally, obj_id=10)
    assert isinstance(t, Tally) and load_object(Tally, 10) is t
    with pytest.raises(ObjectNotFound):
        load_object(Tally, 11)
    disable_auto_commit()
    await t.abump()
    sdk.reconfigure(auto_commit=True)
    with pytest.raises(ObjectNotFound):  # not committed: auto-commit was off
        Tally.load(10)
    t = Tally.create(obj_id=10)
    disable_auto_commit()
    enable_auto_commit()
    assert t.bump() == 1
    sdk.reconfigure()
    assert Tally.load(10).count == 1
    assert ConfigurationError is ConfigError and issubclass(SessionError, OaasError)
    configure_oaas(sdk.config(mock_mode=True))
    assert oaas.config.mock_mode
