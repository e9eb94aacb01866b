//! Orchestrators and activities of a small order-processing workflow.
//!
//! Pure logic: nothing here knows which backend runs it. The same code is
//! tested in-process (`tests/`) and runs on SQLite or a remote sidecar
//! (`main.rs`).

use durable::prelude::*;
use std::time::Duration;

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderItem {
    /// Product name.
    pub name: String,
    /// How many.
    pub quantity: i64,
    /// Price of one.
    pub unit_price: f64,
}

/// An order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Who ordered.
    pub customer: String,
    /// What they ordered.
    pub items: Vec<OrderItem>,
}

/// What processing an order returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderResult {
    /// The payment id, or `"N/A"` when nothing was charged.
    pub order_id: String,
    /// The order's total.
    pub total: f64,
    /// How many items were shipped.
    pub items_processed: usize,
    /// `"completed"`, `"rejected"` or `"cancelled-timeout"`.
    pub status: String,
}

/// A manager's decision on an order that needs approval: `Approval(true)`
/// approves it. On the wire it is the event `"approval"` with the data
/// `true` or `false`, so clients in other languages raise it by that name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Event)]
#[event(name = "approval")]
pub struct Approval(pub bool);

/// Orders at or above this total need a manager's approval.
pub const APPROVAL_THRESHOLD: f64 = 500.0;

/// How long a manager has to approve.
pub const APPROVAL_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- activities

/// Checks that the order has items with positive quantities and prices.
#[activity]
pub async fn validate_order(_ctx: ActivityContext, order: Order) -> Result<(), ActivityError> {
    if order.items.is_empty() {
        return Err(
            ActivityError::new("ValidationError", "Order must contain at least one item")
                .non_retriable(),
        );
    }
    for item in &order.items {
        if item.quantity <= 0 {
            return Err(ActivityError::new(
                "ValidationError",
                format!("Invalid quantity for '{}': {}", item.name, item.quantity),
            )
            .non_retriable());
        }
        if item.unit_price < 0.0 {
            return Err(ActivityError::new(
                "ValidationError",
                format!("Invalid price for '{}': {}", item.name, item.unit_price),
            )
            .non_retriable());
        }
    }
    Ok(())
}

/// The total cost of some items.
#[activity]
pub async fn calculate_total(_ctx: ActivityContext, items: Vec<OrderItem>) -> f64 {
    items.iter().map(|i| i.quantity as f64 * i.unit_price).sum()
}

/// Charges the customer; returns a payment id.
#[activity]
pub async fn process_payment(_ctx: ActivityContext, amount: f64) -> Result<String, ActivityError> {
    if amount <= 0.0 {
        return Err(ActivityError::new(
            "PaymentError",
            "Payment amount must be positive",
        ));
    }
    // A real app would call a payment gateway here.
    Ok(format!("PAY-{}", (amount * 100.0).round() as i64))
}

/// Sends the order confirmation (a real app would send an email).
#[activity]
pub async fn send_confirmation(_ctx: ActivityContext, message: String) {
    let _ = message;
}

/// Ships one item; returns its tracking id.
#[activity]
pub async fn ship_item(_ctx: ActivityContext, item_name: String) -> String {
    format!("TRACK-{}", item_name.to_uppercase())
}

// ------------------------------------------------------------- orchestrators

/// Validates, totals and charges an order, ships every item in parallel and
/// confirms.
#[orchestrator]
pub async fn process_order(
    ctx: OrchestrationContext,
    order: Order,
) -> Result<OrderResult, OrchestrationError> {
    // Activity chaining: each step needs the previous one.
    ctx.call_activity(validate_order, order.clone()).await?;
    let total = ctx
        .call_activity(calculate_total, order.items.clone())
        .await?;
    let payment_id = ctx.call_activity(process_payment, total).await?;

    // Fan-out / fan-in: ship all items at once, collect tracking ids in order.
    let shipments = order
        .items
        .iter()
        .map(|item| ctx.call_activity(ship_item, item.name.clone()));
    let tracking_ids = ctx.when_all(shipments).await?;

    let message = format!(
        "Order for {} confirmed. Payment: {payment_id}. Tracking: {}",
        order.customer,
        tracking_ids.join(", ")
    );
    ctx.call_activity(send_confirmation, message).await?;

    Ok(OrderResult {
        order_id: payment_id,
        total,
        items_processed: tracking_ids.len(),
        status: "completed".into(),
    })
}

/// Like [`process_order`], but orders of 500 or more wait for a manager's
/// [`Approval`] for at most 30 seconds.
#[orchestrator]
pub async fn order_with_approval(
    ctx: OrchestrationContext,
    order: Order,
) -> Result<OrderResult, OrchestrationError> {
    let total = ctx
        .call_activity(calculate_total, order.items.clone())
        .await?;

    if total >= APPROVAL_THRESHOLD {
        let not_processed = |status: &str| OrderResult {
            order_id: "N/A".into(),
            total,
            items_processed: 0,
            status: status.into(),
        };
        // Human interaction: a typed external event with a deadline (a
        // durable timer, cancelled when the manager answers in time).
        match ctx
            .wait_for_event::<Approval>()
            .timeout(APPROVAL_TIMEOUT)
            .await
        {
            Err(_timed_out) => return Ok(not_processed("cancelled-timeout")),
            Ok(approval) => {
                let Approval(approved) = approval?;
                if !approved {
                    return Ok(not_processed("rejected"));
                }
            }
        }
    }

    // The full flow runs as a sub-orchestration with its own history.
    Ok(ctx.call_sub_orchestrator(process_order, order).await?)
}
