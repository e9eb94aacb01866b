//! The sqlite backend of durable (under construction).
