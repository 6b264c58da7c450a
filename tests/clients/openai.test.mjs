// The official `openai` npm client against llmft serve's /v1 routes: models, chat completions and
// completions, streamed (server-sent events ending in [DONE]) and not, with usage counts.
import {test, before, after} from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import {startServer} from "./server.mjs";

let srv, client;
before(async () => {
  srv = await startServer(["--max-tokens", "64"]);
  client = new OpenAI({baseURL: srv.url + "/v1", apiKey: "unused", maxRetries: 0});
});
after(async () => { assert.equal(await srv.stop(), 0, srv.errors()); });

test("models.list names the served model", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, ["tiny"]);
  assert.equal((await client.models.retrieve("tiny")).id, "tiny");
});

test("chat completion: streamed deltas add up to the whole reply, usage counted", async () => {
  const req = {model: "tiny", messages: [{role: "user", content: "Name three fruits."}],
               max_tokens: 16, temperature: 0};
  const whole = await client.chat.completions.create(req);
  assert.equal(whole.object, "chat.completion");
  assert.equal(whole.choices[0].message.role, "assistant");
  assert.equal(whole.choices[0].finish_reason, "length");
  assert.equal(whole.usage.completion_tokens, 16);
  assert.equal(whole.usage.total_tokens, whole.usage.prompt_tokens + 16);
  const stream = await client.chat.completions.create({...req, stream: true,
                                                        stream_options: {include_usage: true}});
  let text = "", finish = null, usage = null, first = true;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    if (!chunk.choices.length) continue;
    if (first) assert.equal(chunk.choices[0].delta.role, "assistant");
    first = false;
    text += chunk.choices[0].delta.content ?? "";
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(finish, "length");
  assert.deepEqual(usage, whole.usage);
});

test("completions continue the raw text", async () => {
  const req = {model: "tiny", prompt: "Once upon a time", max_tokens: 8, temperature: 0};
  const whole = await client.completions.create(req);
  assert.equal(whole.object, "text_completion");
  assert.equal(whole.usage.prompt_tokens, 4);  // no template around a completion prompt
  let text = "";
  for await (const chunk of await client.completions.create({...req, stream: true}))
    text += chunk.choices[0].text;
  assert.equal(text, whole.choices[0].text);
});

test("errors come back as API errors with the status", async () => {
  await assert.rejects(client.chat.completions.create({model: "gpt-4o", messages: [{role: "user", content: "x"}]}),
                       (e) => e.status === 404 && /not found/.test(e.message));
  await assert.rejects(client.chat.completions.create({model: "tiny", messages: [{role: "user", content: "x"}], n: 2}),
                       (e) => e.status === 400 && /n: only 1/.test(e.message));
  await assert.rejects(client.chat.completions.create({model: "tiny", messages: []}),
                       (e) => e.status === 400 && /messages/.test(e.message));
});

test("concurrent greedy requests give each the text it gets alone", async () => {
  const prompts = ["Red", "Green light", "Blue sky above", "A"];
  const alone = [];
  for (const p of prompts)
    alone.push((await client.completions.create({model: "tiny", prompt: p, max_tokens: 20, temperature: 0})).choices[0].text);
  const together = await Promise.all(prompts.map((p) =>
    client.completions.create({model: "tiny", prompt: p, max_tokens: 20, temperature: 0})));
  assert.deepEqual(together.map((r) => r.choices[0].text), alone);
});
