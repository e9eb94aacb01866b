"""A Python durabletask worker serving activities (and one orchestrator)
that Rust orchestrations call by name.

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


def main() -> None:
    address = sys.argv[1]
    worker = TaskHubGrpcWorker(host_address=address)
    worker.add_activity(py_shout)
    worker.add_activity(py_refuse)
    worker.add_orchestrator(py_orchestrator)
    worker.use_work_item_filters()
    worker.start()
    print("READY", flush=True)
    sys.stdin.read()
    worker.stop()


if __name__ == "__main__":
    main()
