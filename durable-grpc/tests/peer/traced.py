"""A traced Python client and worker: with OpenTelemetry's SDK and an
in-memory span exporter, schedules an orchestration by name inside a span
of its own, serves the activity and orchestration it calls, and prints
every span the Python SDK made.

Usage: traced.py ADDRESS ORCHESTRATOR_NAME INPUT_JSON

Prints "RESULT {json}" once the orchestration ends, then one
"SPAN {json}" line per finished span (name, kind, trace and span ids in
hex, parent span id, attributes), then "DONE".
"""

import json
import sys
import uuid

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from durabletask import task
from durabletask.client import TaskHubGrpcClient
from durabletask.worker import TaskHubGrpcWorker


def py_shout(ctx: task.ActivityContext, text: str) -> str:
    return text.upper() + "!"


def py_child(ctx: task.OrchestrationContext, name: str):
    shouted = yield ctx.call_activity(py_shout, input=name)
    return f"child says {shouted}"


def main() -> None:
    address, name, input_json = sys.argv[1], sys.argv[2], sys.argv[3]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    worker = TaskHubGrpcWorker(host_address=address)
    worker.add_activity(py_shout)
    worker.add_orchestrator(py_child)
    worker.use_work_item_filters()
    worker.start()
    client = TaskHubGrpcClient(host_address=address)

    tracer = trace.get_tracer("traced.py")
    # An explicit id: without one, durabletask 1.12 names a different id in
    # its create_orchestration span than the one it sends.
    instance_id = "traced-" + uuid.uuid4().hex
    with tracer.start_as_current_span("python request"):
        client.schedule_new_orchestration(
            name, input=json.loads(input_json), instance_id=instance_id)
    state = client.wait_for_orchestration_completion(instance_id, timeout=60)
    worker.stop()
    print("RESULT " + json.dumps({
        "instance_id": instance_id,
        "status": state.runtime_status.name if state else "MISSING",
        "output": state.serialized_output if state else None,
    }), flush=True)
    for s in exporter.get_finished_spans():
        print("SPAN " + json.dumps({
            "name": s.name,
            "kind": s.kind.name,
            "trace_id": format(s.context.trace_id, "032x"),
            "span_id": format(s.context.span_id, "016x"),
            "parent_span_id": format(s.parent.span_id, "016x") if s.parent else None,
            "attributes": {k: str(v) for k, v in (s.attributes or {}).items()},
        }), flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
