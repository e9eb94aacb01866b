//! Procedural macros of durable (under construction).
