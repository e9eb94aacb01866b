use durable::prelude::*;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub items: Vec<String>,
}

/// Ships one item.
#[activity]
async fn ship_item(_ctx: ActivityContext, name: String) -> String {
    format!("TRACK-{name}")
}

#[activity(name = "Validate")]
pub async fn validate(_ctx: ActivityContext, order: Order) -> Result<(), String> {
    if order.items.is_empty() {
        return Err("at least one item".into());
    }
    Ok(())
}

#[orchestrator(name = "ProcessOrder", version = "2")]
async fn process_order(ctx: OrchestrationContext, order: Order) -> Result<Vec<String>, OrchestrationError> {
    ctx.call_activity(validate, order.clone()).await?;
    let shipped = ctx
        .when_all(order.items.iter().map(|i| ctx.call_activity(ship_item, i.clone())))
        .await?;
    Ok(shipped)
}

#[orchestrator]
async fn no_input(_ctx: OrchestrationContext) {}

fn main() {
    assert_eq!(<process_order as OrchestratorSignature>::NAME, "ProcessOrder");
    assert_eq!(<process_order as OrchestratorSignature>::VERSION, Some("2"));
    assert_eq!(<ship_item as ActivitySignature>::NAME, "ship_item");
    assert_eq!(<validate as ActivitySignature>::NAME, "Validate");
    assert_eq!(<no_input as OrchestratorSignature>::VERSION, None);
    let _ = Registry::new().orchestrator(process_order).activity(ship_item);
}
