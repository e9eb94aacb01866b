"""A Python durabletask client: schedules an orchestration by name (with
the instance tag client=python) and reports how it ended, as one JSON line.

Usage: client.py ADDRESS ORCHESTRATOR_NAME INPUT_JSON

Prints "RESULT {json}" with the instance's status, serialized output and
failure details (type and message), then exits.
"""

import json
import sys

from durabletask.client import TaskHubGrpcClient


def main() -> None:
    address, name, input_json = sys.argv[1], sys.argv[2], sys.argv[3]
    client = TaskHubGrpcClient(host_address=address)
    instance_id = client.schedule_new_orchestration(
        name, input=json.loads(input_json), tags={"client": "python"})
    state = client.wait_for_orchestration_completion(instance_id, timeout=60)
    if state is None:
        print("RESULT " + json.dumps({"instance_id": instance_id, "status": "MISSING"}), flush=True)
        return
    failure = state.failure_details
    print("RESULT " + json.dumps({
        "instance_id": instance_id,
        "status": state.runtime_status.name,
        "output": state.serialized_output,
        "failure_type": failure.error_type if failure else None,
        "failure_message": failure.message if failure else None,
    }), flush=True)


if __name__ == "__main__":
    main()
