// The official `ollama` npm client against llmft serve: model list, show, version, generate and
// chat, streamed and not; a streamed answer equals the non-streamed one (greedy), and options
// reach the sampler (num_predict, seed, stop).
import {test, before, after} from "node:test";
import assert from "node:assert/strict";
import {Ollama} from "ollama";
import {startServer} from "./server.mjs";

let srv, client;
before(async () => {
  srv = await startServer(["--max-tokens", "64"]);
  client = new Ollama({host: srv.url});
});
after(async () => { assert.equal(await srv.stop(), 0, srv.errors()); });

test("list, show and version describe the served model", async () => {
  const list = await client.list();
  assert.equal(list.models.length, 1);
  assert.equal(list.models[0].name, "tiny");
  assert.equal(list.models[0].details.family, "gpt2");
  const show = await client.show({model: "tiny"});
  assert.equal(show.model_info["general.architecture"], "gpt2");
  assert.equal(show.model_info["gpt2.context_length"], 1024);
  assert.match((await client.version()).version, /^\d+\.\d+\.\d+$/);
});

test("generate: streamed pieces add up to the non-streamed answer", async () => {
  const options = {num_predict: 12, temperature: 0};
  const whole = await client.generate({model: "tiny", prompt: "Name a color.", stream: false, options});
  assert.equal(whole.done, true);
  assert.equal(whole.eval_count, 12);  // random weights: no <|endoftext|> within 12 tokens
  assert.equal(whole.done_reason, "length");
  assert.ok(whole.prompt_eval_count > 10);
  assert.ok(whole.total_duration >= whole.eval_duration);
  assert.ok(whole.response.length > 0);
  let text = "", last = null, pieces = 0;
  for await (const part of await client.generate({model: "tiny", prompt: "Name a color.", stream: true, options})) {
    text += part.response;
    last = part;
    pieces++;
  }
  assert.ok(pieces > 2, "several streamed lines");
  assert.equal(last.done, true);
  assert.equal(last.eval_count, 12);
  assert.equal(text, whole.response);
});

test("chat: streamed equals non-streamed; the same seed samples the same text", async () => {
  const messages = [{role: "system", content: "Be brief."},
                    {role: "user", content: "Hi"}, {role: "assistant", content: "Hello."},
                    {role: "user", content: "What is 2+2?"}];
  const options = {num_predict: 10, temperature: 0.9, top_k: 40, top_p: 0.9, seed: 7};
  const a = await client.chat({model: "tiny", messages, options});
  assert.equal(a.message.role, "assistant");
  assert.equal(a.eval_count, 10);
  let streamed = "";
  for await (const part of await client.chat({model: "tiny", messages, options, stream: true}))
    streamed += part.message.content;
  assert.equal(streamed, a.message.content);
  const b = await client.chat({model: "tiny", messages, options: {...options, seed: 8}});
  assert.notEqual(b.message.content, a.message.content);
});

test("a stop string ends the answer before it", async () => {
  const options = {num_predict: 40, temperature: 0};
  const free = await client.generate({model: "tiny", prompt: "Say something.", stream: false, options});
  // Stop at a piece of the free-running answer (three ASCII letters seen there first): the
  // answer must end just before it.
  const text = free.response;
  let cut = -1;
  for (let i = Math.floor(text.length / 3); i + 3 <= text.length && cut < 0; i++)
    if (/^[A-Za-z]{3}$/.test(text.slice(i, i + 3)) && text.indexOf(text.slice(i, i + 3)) === i) cut = i;
  assert.ok(cut > 0, "a usable stop string in: " + text);
  const stop = text.slice(cut, cut + 3);
  const stopped = await client.generate({model: "tiny", prompt: "Say something.", stream: false,
                                         options: {...options, stop: [stop]}});
  assert.equal(stopped.done_reason, "stop");
  assert.equal(stopped.response, text.slice(0, cut));
  assert.ok(stopped.eval_count < free.eval_count);
});

test("an unknown model and a bad option are errors with the server's message", async () => {
  await assert.rejects(client.chat({model: "llama3", messages: [{role: "user", content: "x"}]}),
                       (e) => e.status_code === 404 && /not found/.test(e.message));
  await assert.rejects(client.generate({model: "tiny", prompt: "x", options: {temperature: "hot"}}),
                       (e) => e.status_code === 400 && /options.temperature/.test(e.message));
  await assert.rejects(client.generate({model: "tiny", prompt: "x", options: {num_predict: 100000}}),
                       (e) => e.status_code === 400 && /limit of 64/.test(e.message));
});
