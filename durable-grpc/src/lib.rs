//! The grpc backend of durable (under construction).
