// Drives the dashboard of a running `durable serve` in headless Chromium
// and prints what it saw, one JSON object a line, for
// tests/dashboard_browser.rs to check. Screenshots go to SHOTS.
//
// node dashboard.js URL CHROMIUM SHOTS APPROVED_ID WAITING_ID
"use strict";
const { chromium } = require("playwright-core");
const path = require("path");

const [url, executablePath, shots, approved, waiting] = process.argv.slice(2);
const LIMIT = 30000;
const report = (what, value) => console.log(JSON.stringify({ what, value }));

(async () => {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    const failures = [];
    page.on("pageerror", (e) => failures.push(String(e)));
    page.on("dialog", (d) => d.accept());

    // The list: every instance with its status.
    await page.goto(url);
    await page.waitForSelector(`#instance-table tr[data-id="${waiting}"]`, { timeout: LIMIT });
    report("list", await page.$$eval("#instance-table tbody tr", (rows) =>
      rows.map((r) => ({ id: r.dataset.id, status: r.querySelector("[data-status]").dataset.status }))));
    await page.screenshot({ path: path.join(shots, "list.png"), fullPage: true });

    // A filter: only the running ones.
    await page.check('#filters input[value="running"]');
    await page.click('#filters button[type="submit"]');
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll("#instance-table tbody tr")];
      return rows.length > 0 && rows.every((r) => r.querySelector("[data-status]").dataset.status === "Running");
    }, null, { timeout: LIMIT });
    report("running", await page.$$eval("#instance-table tbody tr", (rows) => rows.map((r) => r.dataset.id)));

    // The approved order: its timeline.
    await page.goto(url + "#/instances/" + encodeURIComponent(approved));
    await page.waitForSelector('#timeline .gantt-row[data-kind="sub-orchestration"]', { timeout: LIMIT });
    report("timeline", await page.$$eval("#timeline .gantt-row", (rows) => rows.map((r) => ({
      kind: r.dataset.kind,
      label: r.querySelector(".gantt-label").textContent,
      bars: [...r.querySelectorAll(".bar")].map((b) => ({
        outcome: b.dataset.outcome, text: b.textContent, link: b.dataset.instance || null,
        width: b.getBoundingClientRect().width,
      })),
      marks: [...r.querySelectorAll(".mark")].map((m) => ({ kind: m.dataset.mark, label: m.dataset.label })),
    }))));
    report("history", await page.$$eval("#history tbody tr td:nth-child(2)", (cells) => cells.map((c) => c.textContent)));
    report("output", JSON.parse(await page.textContent("#output")));
    await page.screenshot({ path: path.join(shots, "instance.png"), fullPage: true });
    await page.screenshot({ path: path.join(shots, "instance-top.png"), clip: { x: 0, y: 0, width: 1280, height: 640 } });

    // Drill down into the sub-orchestration.
    await page.click('#timeline .bar[data-instance]');
    await page.waitForSelector("#parent a", { timeout: LIMIT });
    report("child", {
      hash: decodeURIComponent(new URL(page.url()).hash),
      name: await page.textContent("#name"),
      parent: await page.textContent("#parent"),
      rows: await page.$$eval("#timeline .gantt-row", (rows) => rows.map((r) => r.dataset.kind)),
    });
    await page.screenshot({ path: path.join(shots, "child.png"), fullPage: true });

    // The waiting order: terminate it from the page.
    await page.goto(url + "#/instances/" + encodeURIComponent(waiting));
    await page.waitForSelector('h1 [data-status="Running"]', { timeout: LIMIT });
    report("waiting", await page.$$eval("#timeline .gantt-row", (rows) => rows.map((r) => ({
      kind: r.dataset.kind, outcome: [...r.querySelectorAll(".bar")].map((b) => b.dataset.outcome),
    }))));
    await page.fill("#reason", "terminated from the dashboard");
    await page.click("#action-terminate");
    await page.waitForSelector('h1 [data-status="Terminated"]', { timeout: LIMIT });
    report("terminated", {
      message: await page.textContent("#message"),
      output: JSON.parse(await page.textContent("#output")),
    });
    await page.screenshot({ path: path.join(shots, "terminated.png"), fullPage: true });

    report("page errors", failures);
    console.log("done");
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
