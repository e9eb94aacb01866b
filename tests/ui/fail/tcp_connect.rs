use durable::prelude::*;
use std::net::TcpStream;

#[orchestrator]
async fn ping(_ctx: OrchestrationContext, address: String) -> bool {
    TcpStream::connect(address).is_ok()
}

fn main() {}
