"""S1 (seq3 throughput) run by the Python durabletask SDK's own worker and
client against a TaskHubSidecarService sidecar, for comparison with durable's
`--backend grpc` run against the same sidecar.

Usage:
  grpc_python_s1.py --address HOST:PORT [--count 200]
  grpc_python_s1.py --serve [--count 200]   # starts the SDK's in-memory sidecar itself

Schedules COUNT orchestrations `py_seq3(i)`, each calling the activity
`py_inc` three times in sequence, waits for all of them, checks every output
is i + 3, and prints one JSON line:
  {"scenario": "S1", "sdk": "python", "count": N, "seconds": S, "per_second": R}
The worker asks the sidecar only for its own names, so a durable worker may
stay connected to the same sidecar meanwhile.
"""

import argparse
import json
import socket
import sys
import time

from durabletask import task
from durabletask.client import OrchestrationStatus, TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker


def py_inc(ctx: task.ActivityContext, x: int) -> int:
    return x + 1


def py_seq3(ctx: task.OrchestrationContext, x: int):
    a = yield ctx.call_activity(py_inc, input=x)
    b = yield ctx.call_activity(py_inc, input=a)
    c = yield ctx.call_activity(py_inc, input=b)
    return c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()

    server = None
    address = args.address
    if args.serve:
        from durabletask.testing import create_test_backend
        port = free_port()
        server = create_test_backend(port=port)
        address = f"127.0.0.1:{port}"
    if not address:
        parser.error("give --address HOST:PORT or --serve")

    worker = TaskHubGrpcWorker(host_address=address)
    worker.add_orchestrator(py_seq3)
    worker.add_activity(py_inc)
    worker.use_work_item_filters()
    worker.start()
    client = TaskHubGrpcClient(host_address=address)
    try:
        start = time.perf_counter()
        ids = [client.schedule_new_orchestration(py_seq3, input=i) for i in range(args.count)]
        for i, instance_id in enumerate(ids):
            state = client.wait_for_orchestration_completion(instance_id, timeout=120)
            if state is None or state.runtime_status != OrchestrationStatus.COMPLETED:
                print(f"instance {instance_id} did not complete: {state}", file=sys.stderr)
                return 1
            if json.loads(state.serialized_output) != i + 3:
                print(f"instance {instance_id} returned {state.serialized_output}", file=sys.stderr)
                return 1
        seconds = time.perf_counter() - start
    finally:
        worker.stop()
        if server is not None:
            server.stop()
    print(json.dumps({
        "scenario": "S1",
        "sdk": "python",
        "count": args.count,
        "seconds": round(seconds, 3),
        "per_second": round(args.count / seconds, 1),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
