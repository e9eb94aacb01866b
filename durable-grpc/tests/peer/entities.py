"""Python durabletask entities beside Rust ones.

Usage:
  entities.py worker ADDRESS
      Serves the entity "pycounter" and the orchestrations "py_calls_rust"
      and "py_calls_rust_failing" (which call the Rust entity "counter"),
      asking the sidecar only for these, until its standard input closes.
      Prints "READY" once it runs.
  entities.py signal ADDRESS KEY COUNT EXPECTED
      Signals "add 1" to the Rust entity @counter@KEY COUNT times, then reads
      the entity until its state holds {"value": EXPECTED} (at most 60 s) and
      prints "STATE <state as stored>", or "TIMEOUT <last state>".
"""

import json
import sys
import time

from durabletask import task
from durabletask.client import TaskHubGrpcClient
from durabletask.entities import EntityContext, EntityInstanceId
from durabletask.worker import TaskHubGrpcWorker


def pycounter(ctx: EntityContext, input):
    # A function-based entity: an int, with "add" (returns the new value)
    # and "get".
    value = ctx.get_state(int, 0)
    if ctx.operation == "add":
        value += input
        ctx.set_state(value)
        return value
    if ctx.operation == "get":
        return value
    raise ValueError(f"pycounter has no operation {ctx.operation}")


def py_calls_rust(ctx: task.OrchestrationContext, key: str):
    counter = EntityInstanceId("counter", key)
    first = yield ctx.call_entity(counter, "add", 5)
    second = yield ctx.call_entity(counter, "add", 6)
    read = yield ctx.call_entity(counter, "get")
    return [first, second, read]


def py_calls_rust_failing(ctx: task.OrchestrationContext, key: str):
    counter = EntityInstanceId("counter", key)
    try:
        yield ctx.call_entity(counter, "fail_after_add", 40)
        return "no failure"
    except Exception as e:  # the entity's failure, as the SDK raises it
        read = yield ctx.call_entity(counter, "get")
        return {"failure": str(e), "after": read}


def worker(address: str) -> None:
    w = TaskHubGrpcWorker(host_address=address)
    w.add_entity(pycounter)
    w.add_orchestrator(py_calls_rust)
    w.add_orchestrator(py_calls_rust_failing)
    w.use_work_item_filters()
    w.start()
    print("READY", flush=True)
    sys.stdin.read()
    w.stop()


def signal(address: str, key: str, count: int, expected: int) -> None:
    client = TaskHubGrpcClient(host_address=address)
    counter = EntityInstanceId("counter", key)
    for _ in range(count):
        client.signal_entity(counter, "add", 1)
    deadline = time.monotonic() + 60
    last = None
    while time.monotonic() < deadline:
        meta = client.get_entity(counter, include_state=True)
        if meta is not None:
            last = meta.get_state()
            if last is not None and json.loads(last).get("value") == expected:
                print(f"STATE {last}", flush=True)
                return
        time.sleep(0.05)
    print(f"TIMEOUT {last}", flush=True)


def main() -> None:
    mode = sys.argv[1]
    if mode == "worker":
        worker(sys.argv[2])
    elif mode == "signal":
        signal(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        raise SystemExit(f"unknown mode {mode}; see the usage at the top of entities.py")


if __name__ == "__main__":
    main()
