"""Prints the Python durabletask package's compiled protocol (the upstream
definition) as JSON: package, messages with their fields, enums, and the
service's methods. The Rust side checks its own proto against it."""

import json

from durabletask.internal import orchestrator_service_pb2 as pb


def field(f):
    return {
        "number": f.number,
        "type": f.type,
        "type_name": (f.message_type or f.enum_type).full_name
        if (f.message_type or f.enum_type) else "",
        "repeated": f.is_repeated,
    }


def main() -> None:
    d = pb.DESCRIPTOR
    service = d.services_by_name["TaskHubSidecarService"]
    print(json.dumps({
        "package": d.package,
        "service": service.full_name,
        "messages": {
            name: {f.name: field(f) for f in m.fields}
            for name, m in d.message_types_by_name.items()
        },
        "enums": {
            name: {v.name: v.number for v in e.values}
            for name, e in d.enum_types_by_name.items()
        },
        "methods": {
            name: {
                "input": m.input_type.full_name,
                "output": m.output_type.full_name,
                "server_streaming": m.server_streaming,
                "client_streaming": m.client_streaming,
            }
            for name, m in service.methods_by_name.items()
        },
    }))


if __name__ == "__main__":
    main()
