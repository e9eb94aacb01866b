// The JavaScript Durable Task SDK's worker and client on a sidecar given
// as the first argument (host:port): an activity chain and a fan-out.
// Prints one JSON line per instance ({"id", "status", "output"}), then
// "done"; exits non-zero on any failure.
"use strict";

const { TaskHubGrpcClient, TaskHubGrpcWorker, whenAll, OrchestrationStatus } =
  require("@microsoft/durabletask-js");

const address = process.argv[2];
if (!address) {
  console.error("usage: node chain_fan_out.js HOST:PORT");
  process.exit(2);
}

// Warnings and errors go to stderr (the test shows them if it fails);
// stdout is for the results.
const logger = {
  error: (m, ...a) => console.error(m, ...a),
  warn: (m, ...a) => console.error(m, ...a),
  info: () => {},
  debug: () => {},
};

const inc = async (_ctx, x) => x + 1;
const square = async (_ctx, x) => x * x;

// inc three times: x + 3.
async function* chain(ctx, x) {
  const a = yield ctx.callActivity(inc, x);
  const b = yield ctx.callActivity(inc, a);
  const c = yield ctx.callActivity(inc, b);
  return c;
}

// The sum of the squares of 1..n.
async function* fanOut(ctx, n) {
  const tasks = [];
  for (let i = 1; i <= n; i++) {
    tasks.push(ctx.callActivity(square, i));
  }
  const squares = yield whenAll(tasks);
  return squares.reduce((s, v) => s + v, 0);
}

async function main() {
  const worker = new TaskHubGrpcWorker({ hostAddress: address, logger });
  worker.addOrchestrator(chain);
  worker.addOrchestrator(fanOut);
  worker.addActivity(inc);
  worker.addActivity(square);
  await worker.start();
  const client = new TaskHubGrpcClient({ hostAddress: address, logger });
  try {
    const started = [];
    for (let i = 0; i < 3; i++) {
      started.push(await client.scheduleNewOrchestration(chain, i * 10, `js-chain-${i}`));
    }
    for (let i = 0; i < 2; i++) {
      started.push(await client.scheduleNewOrchestration(fanOut, 10 + i, `js-fan-${i}`));
    }
    for (const id of started) {
      const state = await client.waitForOrchestrationCompletion(id, true, 60);
      if (!state) {
        throw new Error(`instance ${id} not found`);
      }
      const status = OrchestrationStatus[state.runtimeStatus] ?? String(state.runtimeStatus);
      console.log(JSON.stringify({ id, status, output: state.serializedOutput ?? null }));
    }
    console.log("done");
  } finally {
    await client.stop();
    await worker.stop();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e && e.stack ? e.stack : String(e));
    process.exit(1);
  },
);
