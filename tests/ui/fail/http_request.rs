use durable::prelude::*;

// Stands in for the reqwest crate: the check reads paths, not types.
mod reqwest {
    pub async fn get(_url: &str) -> Result<String, std::io::Error> {
        Ok(String::new())
    }
}

#[orchestrator]
async fn fetch(_ctx: OrchestrationContext, url: String) -> Result<String, OrchestrationError> {
    Ok(reqwest::get(&url).await?)
}

fn main() {}
