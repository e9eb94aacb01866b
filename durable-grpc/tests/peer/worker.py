"""A Python durabletask worker serving activities that Rust orchestrations
call by name, and orchestrators of its own (one calling an activity, a
chain, a fan-out).

Usage: worker.py ADDRESS

Serves until its standard input closes. It asks the sidecar only for the
work it has registered, so it can share a task hub with a Rust worker.
"""

import sys

from durabletask import task
from durabletask.worker import TaskHubGrpcWorker


def py_shout(ctx: task.ActivityContext, text: str) -> str:
    return text.upper() + "!"


def py_refuse(ctx: task.ActivityContext, reason: str) -> str:
    raise ValueError(f"python refuses: {reason}")


def py_orchestrator(ctx: task.OrchestrationContext, name: str):
    shouted = yield ctx.call_activity(py_shout, input=name)
    return f"python says {shouted}"


def py_chain(ctx: task.OrchestrationContext, name: str):
    # Each step's output is the next step's input.
    first = yield ctx.call_activity(py_shout, input=name)
    second = yield ctx.call_activity(py_shout, input=first)
    third = yield ctx.call_activity(py_shout, input=second)
    return third


def py_fan_out(ctx: task.OrchestrationContext, count: int):
    # One activity per item, all at once, then their results together.
    tasks = [ctx.call_activity(py_shout, input=f"item{i}") for i in range(count)]
    results = yield task.when_all(tasks)
    return results


def main() -> None:
    address = sys.argv[1]
    worker = TaskHubGrpcWorker(host_address=address)
    worker.add_activity(py_shout)
    worker.add_activity(py_refuse)
    worker.add_orchestrator(py_orchestrator)
    worker.add_orchestrator(py_chain)
    worker.add_orchestrator(py_fan_out)
    worker.use_work_item_filters()
    worker.start()
    print("READY", flush=True)
    sys.stdin.read()
    worker.stop()


if __name__ == "__main__":
    main()
