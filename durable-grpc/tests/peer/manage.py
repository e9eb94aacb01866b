"""A Python durabletask client for the versioning and repair interop tests:
one command, then one JSON line.

Usage:
  manage.py ADDRESS schedule NAME INPUT_JSON VERSION   schedule on a version, wait for the end
  manage.py ADDRESS rewind INSTANCE_ID REASON          rewind a failed instance, wait for the end

Prints "RESULT {json}" with the instance's id, status, serialized output
and failure message, then exits.
"""

import json
import sys

from durabletask.client import TaskHubGrpcClient


def report(client: TaskHubGrpcClient, instance_id: str) -> None:
    state = client.wait_for_orchestration_completion(instance_id, timeout=60)
    if state is None:
        print("RESULT " + json.dumps({"instance_id": instance_id, "status": "MISSING"}), flush=True)
        return
    failure = state.failure_details
    print("RESULT " + json.dumps({
        "instance_id": instance_id,
        "status": state.runtime_status.name,
        "output": state.serialized_output,
        "failure_message": failure.message if failure else None,
    }), flush=True)


def main() -> None:
    address, command = sys.argv[1], sys.argv[2]
    client = TaskHubGrpcClient(host_address=address)
    if command == "schedule":
        name, input_json, version = sys.argv[3], sys.argv[4], sys.argv[5]
        instance_id = client.schedule_new_orchestration(
            name, input=json.loads(input_json), version=version)
        report(client, instance_id)
    elif command == "rewind":
        instance_id, reason = sys.argv[3], sys.argv[4]
        client.rewind_orchestration(instance_id, reason=reason)
        report(client, instance_id)
    else:
        raise SystemExit(f"unknown command {command!r}; use schedule or rewind")


if __name__ == "__main__":
    main()
