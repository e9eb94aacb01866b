//! Every scenario of the order-processing example, in-process on the
//! in-memory backend with a virtual clock.

use durable::prelude::*;
use durable::testing::replay;
use order_processing::workflows::*;

fn item(name: &str, quantity: i64, unit_price: f64) -> OrderItem {
    OrderItem {
        name: name.into(),
        quantity,
        unit_price,
    }
}

fn order(customer: &str, items: Vec<OrderItem>) -> Order {
    Order {
        customer: customer.into(),
        items,
    }
}

async fn run(
    env: &TestEnv,
    o: impl Orchestrator<Input = Order>,
    input: Order,
) -> durable::OrchestrationState {
    let id = env.client().schedule(o, input).await.unwrap();
    env.wait_for_completion(&id).await.unwrap()
}

#[durable::test]
async fn single_item_order(env: TestEnv) {
    let state = run(
        &env,
        process_order,
        order("Alice", vec![item("Widget", 2, 10.0)]),
    )
    .await;
    assert_eq!(
        state.status(),
        OrchestrationStatus::Completed,
        "{:?}",
        state.failure()
    );
    let result: OrderResult = state.output().unwrap();
    assert_eq!(result.total, 20.0);
    assert_eq!(result.items_processed, 1);
    assert_eq!(result.status, "completed");
    assert_eq!(result.order_id, "PAY-2000");
}

#[durable::test]
async fn multi_item_order(env: TestEnv) {
    let items = vec![
        item("Widget", 3, 25.0),
        item("Gadget", 1, 99.99),
        item("Doohickey", 5, 4.5),
    ];
    let state = run(&env, process_order, order("Bob", items)).await;
    let result: OrderResult = state.output().unwrap();
    assert_eq!(result.total, 3.0 * 25.0 + 99.99 + 5.0 * 4.5);
    assert!((result.total - 197.49).abs() < 1e-9);
    assert_eq!(result.items_processed, 3);
    assert_eq!(result.status, "completed");
}

#[durable::test]
async fn empty_order_fails(env: TestEnv) {
    let state = run(&env, process_order, order("Eve", vec![])).await;
    assert_eq!(state.status(), OrchestrationStatus::Failed);
    let failure = state.failure().unwrap();
    assert!(failure.message.contains("at least one item"), "{failure:?}");
}

#[durable::test]
async fn invalid_quantity_fails(env: TestEnv) {
    let state = run(
        &env,
        process_order,
        order("Mallory", vec![item("Widget", 0, 10.0)]),
    )
    .await;
    assert_eq!(state.status(), OrchestrationStatus::Failed);
    assert!(state
        .failure()
        .unwrap()
        .message
        .contains("Invalid quantity"));
}

#[durable::test]
async fn low_value_auto_approved(env: TestEnv) {
    let state = run(
        &env,
        order_with_approval,
        order("Alice", vec![item("Pen", 10, 2.0)]),
    )
    .await;
    let result: OrderResult = state.output().unwrap();
    assert_eq!(result.status, "completed");
    assert_eq!(result.total, 20.0);
}

#[durable::test]
async fn high_value_approved(env: TestEnv) {
    let id = env
        .client()
        .schedule(
            order_with_approval,
            order("Bob", vec![item("Server", 1, 1500.0)]),
        )
        .await
        .unwrap();
    env.client().raise(&id, &Approval(true)).await.unwrap();
    let result: OrderResult = env
        .wait_for_completion(&id)
        .await
        .unwrap()
        .output()
        .unwrap();
    assert_eq!(result.status, "completed");
    assert_eq!(result.total, 1500.0);
    assert_eq!(result.items_processed, 1);
}

#[durable::test]
async fn high_value_rejected(env: TestEnv) {
    let id = env
        .client()
        .schedule(
            order_with_approval,
            order("Charlie", vec![item("Server", 2, 1500.0)]),
        )
        .await
        .unwrap();
    env.client().raise(&id, &Approval(false)).await.unwrap();
    let result: OrderResult = env
        .wait_for_completion(&id)
        .await
        .unwrap()
        .output()
        .unwrap();
    assert_eq!(result.status, "rejected");
    assert_eq!(result.items_processed, 0);
}

#[durable::test]
async fn an_approval_raised_by_name_as_other_languages_do_is_the_same_event(env: TestEnv) {
    assert_eq!(<Approval as durable::Event>::NAME, "approval");
    let id = env
        .client()
        .schedule(
            order_with_approval,
            order("Erin", vec![item("Server", 1, 900.0)]),
        )
        .await
        .unwrap();
    // The event's name and its JSON data: `Approval(false)` is `false`.
    env.client()
        .raise_event(&id, "Approval", &false)
        .await
        .unwrap();
    let result: OrderResult = env
        .wait_for_completion(&id)
        .await
        .unwrap()
        .output()
        .unwrap();
    assert_eq!(result.status, "rejected");
}

#[durable::test]
async fn high_value_times_out(env: TestEnv) {
    let started = env.now();
    let state = run(
        &env,
        order_with_approval,
        order("Diana", vec![item("Server", 1, 750.0)]),
    )
    .await;
    let result: OrderResult = state.output().unwrap();
    assert_eq!(result.status, "cancelled-timeout");
    assert_eq!(result.items_processed, 0);
    // The 30 s timer fired on the virtual clock, which jumped to it as soon
    // as nothing else could happen: no real waiting (the run takes
    // milliseconds; `cargo test` shows it).
    assert!(env.now() - started >= durable::chrono::Duration::seconds(30));
}

#[durable::test]
async fn recorded_history_replays_against_the_current_code(env: TestEnv) {
    let id = env
        .client()
        .schedule(
            order_with_approval,
            order("Bob", vec![item("Server", 1, 1500.0)]),
        )
        .await
        .unwrap();
    env.client().raise(&id, &Approval(true)).await.unwrap();
    env.wait_for_completion(&id).await.unwrap();
    let history = env.history(&id).await;
    // Round-trip through the documented JSON export format.
    let json = serde_json::to_string_pretty(&history).unwrap();
    let history: Vec<durable::HistoryEvent> = serde_json::from_str(&json).unwrap();
    replay(order_with_approval, &history).expect("the unchanged code replays its own history");
}
