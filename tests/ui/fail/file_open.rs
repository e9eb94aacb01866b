use durable::prelude::*;
use std::fs::File;
use std::io::Read;

#[orchestrator]
async fn load(_ctx: OrchestrationContext, path: String) -> Result<String, OrchestrationError> {
    let mut text = String::new();
    File::open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

fn main() {}
