//! The project's own `.proto` against the upstream definition, as the Python
//! `durabletask` package compiled it: no package, the same service path, and
//! every message, field (number, type, repetition), enum value and method
//! durable declares exists upstream unchanged. Fields durable leaves out are
//! fine (protobuf skips unknown fields); different numbers or types are not.

use durable_grpc::testing::PyProcess;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::FileDescriptorSet;
use serde_json::Value;
use std::time::Duration;

fn ours() -> prost_types::FileDescriptorProto {
    let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/task_hub_sidecar.descriptors"));
    let set = FileDescriptorSet::decode(&bytes[..]).expect("the build script's descriptors");
    set.file
        .into_iter()
        .find(|f| f.name() == "task_hub_sidecar.proto")
        .expect("our proto file in the descriptor set")
}

fn upstream() -> Value {
    let mut p = PyProcess::spawn("descriptors.py", &[]);
    let line = p
        .next_line(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("descriptors.py: {e}"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("descriptors.py printed {line}: {e}"))
}

#[test]
fn our_proto_is_wire_compatible_with_the_upstream_definition() {
    let ours = ours();
    let up = upstream();
    let mut problems = Vec::new();

    assert_eq!(ours.package(), "", "our proto must have no package");
    assert_eq!(up["package"], "", "upstream has no package");
    assert_eq!(up["service"], "TaskHubSidecarService");

    for m in &ours.message_type {
        let name = m.name();
        let Some(theirs) = up["messages"].get(name) else {
            problems.push(format!("message {name} does not exist upstream"));
            continue;
        };
        for f in &m.field {
            let Some(t) = theirs.get(f.name()) else {
                problems.push(format!("{name}.{} does not exist upstream", f.name()));
                continue;
            };
            if t["number"] != f.number() {
                problems.push(format!(
                    "{name}.{}: number {} here, {} upstream",
                    f.name(),
                    f.number(),
                    t["number"]
                ));
            }
            if t["type"] != f.r#type() as i32 {
                problems.push(format!(
                    "{name}.{}: type {:?} here, {} upstream",
                    f.name(),
                    f.r#type(),
                    t["type"]
                ));
            }
            if matches!(f.r#type(), Type::Message | Type::Enum)
                && t["type_name"] != f.type_name().trim_start_matches('.')
            {
                problems.push(format!(
                    "{name}.{}: type {} here, {} upstream",
                    f.name(),
                    f.type_name(),
                    t["type_name"]
                ));
            }
            if t["repeated"] != (f.label() == Label::Repeated) {
                problems.push(format!("{name}.{}: repetition differs", f.name()));
            }
        }
    }

    for e in &ours.enum_type {
        for v in &e.value {
            if up["enums"][e.name()][v.name()] != v.number() {
                problems.push(format!(
                    "enum {}.{} = {} here, {} upstream",
                    e.name(),
                    v.name(),
                    v.number(),
                    up["enums"][e.name()][v.name()]
                ));
            }
        }
    }

    let service = ours
        .service
        .iter()
        .find(|s| s.name() == "TaskHubSidecarService")
        .expect("our service");
    for m in &service.method {
        let t = &up["methods"][m.name()];
        if t.is_null() {
            problems.push(format!("rpc {} does not exist upstream", m.name()));
            continue;
        }
        let strip = |s: &str| s.trim_start_matches('.').to_string();
        if t["input"] != strip(m.input_type()) || t["output"] != strip(m.output_type()) {
            problems.push(format!("rpc {}: message types differ", m.name()));
        }
        if t["server_streaming"] != m.server_streaming()
            || t["client_streaming"] != m.client_streaming()
        {
            problems.push(format!("rpc {}: streaming differs", m.name()));
        }
    }

    assert!(
        problems.is_empty(),
        "the proto is not wire-compatible:\n{}",
        problems.join("\n")
    );
    // The check covers something: every message durable declares was found.
    assert!(ours.message_type.len() > 50, "{}", ours.message_type.len());
}
