//! Catching a breaking change before deploying it: record a history with the
//! current code, then replay it against a changed orchestrator.

use durable::prelude::*;
use durable::testing::{replay, ReplayError};
use order_processing::workflows::*;

/// A "new version" of `process_order` that inserts a fraud check before the
/// payment, under the same wire name: running instances would break.
#[orchestrator(name = "process_order")]
async fn process_order_with_fraud_check(
    ctx: OrchestrationContext,
    order: Order,
) -> Result<OrderResult, OrchestrationError> {
    ctx.call_activity(validate_order, order.clone()).await?;
    let total = ctx
        .call_activity(calculate_total, order.items.clone())
        .await?;
    ctx.call_activity_by_name::<()>("fraud_check", &total)
        .await?;
    let payment_id = ctx.call_activity(process_payment, total).await?;
    Ok(OrderResult {
        order_id: payment_id,
        total,
        items_processed: 0,
        status: "completed".into(),
    })
}

#[durable::test(
    orchestrators(process_order),
    activities(
        validate_order,
        calculate_total,
        process_payment,
        send_confirmation,
        ship_item
    )
)]
async fn changed_orchestrator_is_reported_before_deploying(env: TestEnv) {
    let order = Order {
        customer: "Alice".into(),
        items: vec![OrderItem {
            name: "Widget".into(),
            quantity: 2,
            unit_price: 10.0,
        }],
    };
    let id = env.client().schedule(process_order, order).await.unwrap();
    env.wait_for_completion(&id).await.unwrap();
    let recorded = env.history(&id).await;

    replay(process_order, &recorded).expect("the code that recorded it replays it");

    match replay(process_order_with_fraud_check, &recorded) {
        Err(ReplayError::NonDeterminism(nd)) => {
            assert_eq!(nd.sequence_id, 2);
            assert_eq!(nd.history.as_deref(), Some("activity \"process_payment\""));
            assert_eq!(nd.code.as_deref(), Some("activity \"fraud_check\""));
            let message = ReplayError::NonDeterminism(nd).to_string();
            assert!(message.contains("sequence #2"), "{message}");
        }
        other => panic!("expected a non-determinism report, got {other:?}"),
    }
}
