//! The gRPC remote backend of durable (under construction).

#[allow(missing_docs, unreachable_pub, dead_code, clippy::all)]
mod proto {
    tonic::include_proto!("_");
}
