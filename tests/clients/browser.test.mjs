// The chat page at "/" in a real headless browser (Debian's chromium driven by playwright-core):
// it shows the model name, streams an answer into the conversation, keeps the history, and its
// Stop button ends a long answer (the server frees the slot).
import {test, before, after} from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {chromium} from "playwright-core";
import {startServer, waitForStats} from "./server.mjs";

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
let srv, context, page, profile;

before(async () => {
  srv = await startServer(["--max-tokens", "100000"]);
  profile = fs.mkdtempSync(path.join(os.tmpdir(), "llmft-chromium-"));
  // A fresh profile folder (playwright passes it as --user-data-dir).
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  page = context.pages()[0] ?? await context.newPage();
  await page.goto(srv.url + "/");
});

after(async () => {
  await context?.close();
  fs.rmSync(profile, {recursive: true, force: true});
  assert.equal(await srv.stop(), 0, srv.errors());
});

test("the page names the model and loads nothing from elsewhere", async () => {
  await page.waitForFunction(() => document.getElementById("model").textContent === "tiny");
  const html = await (await fetch(srv.url + "/", {headers: {Accept: "text/html"}})).text();
  assert.doesNotMatch(html, /<(script|link|img)[^>]+(src|href)=/i);
});

test("a message gets a streamed answer equal to the API's", async () => {
  await page.fill("#max-tokens", "12");
  await page.fill("#input", "Name a color.");
  await page.press("#input", "Enter");
  const answer = page.locator(".msg.assistant").last();
  await page.waitForFunction(() => document.querySelector(".msg.assistant:last-child")?.dataset.state === "done");
  const text = await answer.locator(".text").textContent();
  const api = await (await fetch(srv.url + "/api/chat", {method: "POST", body: JSON.stringify({
    model: "tiny", stream: false, messages: [{role: "user", content: "Name a color."}],
    options: {temperature: 0, num_predict: 12}})})).json();
  assert.equal(text, api.message.content);
  assert.match(await answer.locator(".note").textContent(), /^12 tokens/);
  assert.equal(await page.locator(".msg.user").last().textContent(), "Name a color.");
});

test("Stop ends a long answer while it streams", async () => {
  await page.fill("#max-tokens", "100000");
  await page.fill("#input", "Tell me a very long story.");
  await page.click("#send");
  // Text arrives while the answer is still streaming (Stop is shown).
  await page.waitForFunction(() => {
    const m = document.querySelector(".msg.assistant:last-child");
    return m.dataset.state === "streaming" && m.querySelector(".text").textContent.length > 20;
  });
  assert.ok(await page.isVisible("#stop"));
  await page.click("#stop");
  await page.waitForFunction(() => document.querySelector(".msg.assistant:last-child").dataset.state === "stopped");
  assert.ok(await page.isVisible("#send"));
  const s = await waitForStats(srv.url, (s) => s.active === 0, "the slot freed");
  assert.equal(s.cancelled, 1);
  // The conversation goes on: both earlier turns are in the next request's history.
  await page.fill("#max-tokens", "5");
  await page.fill("#input", "Thanks.");
  await page.press("#input", "Enter");
  await page.waitForFunction(() => document.querySelector(".msg.assistant:last-child").dataset.state === "done");
  assert.equal(await page.locator(".msg.user").count(), 3);
});
