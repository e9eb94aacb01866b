"""S1 (seq3 throughput) run by the Python durabletask SDK's own worker and
client against a TaskHubSidecarService sidecar, for comparison with durable's
`--backend grpc` run against the same sidecar.

Usage:
  grpc_python_s1.py --address HOST:PORT [--taskhub NAME] [--count 200] [--timeout 300]
  grpc_python_s1.py --serve [--count 200]   # starts the SDK's in-memory sidecar itself

Schedules COUNT orchestrations `py_seq3(i)`, each calling the activity
`py_inc` three times in sequence, then waits for each in turn (as durable's
S1 does), checks every output is i + 3, and prints one line: `RESULT `
followed by JSON,
  RESULT {"scenario": "S1", "sdk": "python", "count": N, "seconds": S, "per_second": R}
timed from the first schedule to the last completion seen. The SDK's own
logs go to stderr. On failure it prints the reason to stderr and exits 1.

The worker asks the sidecar only for its own names, but a worker on the
same task hub that asks for everything (durable-bench's asks without
filters) can still be handed this script's orchestrations: run it when no
such worker is connected. `durable-bench --backend grpc --compare-python`
runs it after stopping its own worker.
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
    parser.add_argument("--taskhub", default="default")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--timeout", type=int, default=300,
                        help="longest wait for any one instance, in seconds")
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

    metadata = [("taskhub", args.taskhub)]
    worker = TaskHubGrpcWorker(host_address=address, metadata=metadata)
    worker.add_orchestrator(py_seq3)
    worker.add_activity(py_inc)
    worker.use_work_item_filters()
    worker.start()
    client = TaskHubGrpcClient(host_address=address, metadata=metadata)
    try:
        start = time.perf_counter()
        ids = [client.schedule_new_orchestration(py_seq3, input=i) for i in range(args.count)]
        for i, instance_id in enumerate(ids):
            state = client.wait_for_orchestration_completion(instance_id, timeout=args.timeout)
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
    print("RESULT " + json.dumps({
        "scenario": "S1",
        "sdk": "python",
        "count": args.count,
        "seconds": round(seconds, 4),
        "per_second": round(args.count / seconds, 2),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
