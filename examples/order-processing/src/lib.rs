//! The order-processing example: workflow logic in [`workflows`], the app in
//! `main.rs`, tests in `tests/`.

pub mod workflows;
