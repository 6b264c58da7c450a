// Hostile and heavy use of llmft serve over plain HTTP: malformed bodies get a 4xx JSON error and
// the server keeps answering; a client that disconnects frees its slot; a full queue gets 503;
// SIGTERM lets the running answer finish, refuses new ones and exits 0.
import {test, before, after} from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import {startServer, stats, waitForStats} from "./server.mjs";

let srv;
before(async () => {
  // One slot and one queue place make "busy" easy to reach; long answers allowed.
  srv = await startServer(["--parallel", "1", "--queue", "1", "--max-tokens", "100000",
                           "--max-body-bytes", "4096"]);
});
after(async () => { assert.equal(await srv.stop(), 0, srv.errors()); });

// POST raw bytes; resolves {status, json}.
function post(path, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(srv.url + path);
    const req = http.request({host: u.hostname, port: u.port, path: u.pathname, method: "POST",
                              headers: {"Content-Type": "application/json", ...headers}}, (res) => {
      let data = "";
      res.on("data", (d) => { data += d; });
      res.on("end", () => {
        let json = null;
        try { json = JSON.parse(data); } catch (_) {}
        resolve({status: res.statusCode, json, text: data, headers: res.headers});
      });
    });
    req.on("error", reject);
    req.end(body);
  });
}

// A streaming request that stays open; resolves once its first line arrived.
function openStream(numPredict = 100000) {
  return new Promise((resolve, reject) => {
    const u = new URL(srv.url + "/api/generate");
    const req = http.request({host: u.hostname, port: u.port, path: u.pathname, method: "POST",
                              headers: {"Content-Type": "application/json"}}, (res) => {
      let data = "";
      const lines = [];
      res.on("data", (d) => {
        data += d;
        let nl;
        while ((nl = data.indexOf("\n")) >= 0) {
          lines.push(JSON.parse(data.slice(0, nl)));
          data = data.slice(nl + 1);
          if (lines.length === 1) resolve({req, res, lines});
        }
      });
      res.on("error", () => {});
    });
    req.on("error", () => {});
    req.end(JSON.stringify({model: "tiny", prompt: "Tell a long story.", options: {num_predict: numPredict}}));
  });
}

const bad = [
  ["malformed JSON", '{"model": "tiny", "prompt": ', 400, /^the request body: line 1, column 29: the JSON ends early/],
  ["not an object", '[1, 2]', 400, /JSON object/],
  ["wrong type", '{"model": "tiny", "prompt": 42}', 400, /prompt: expected a string/],
  ["huge number", '{"model": "tiny", "prompt": "x", "options": {"num_predict": 1e300}}', 400, /num_predict/],
  ["huge integer", '{"model": "tiny", "prompt": "x", "options": {"top_k": 123456789012345678901234567890}}', 400, /top_k/],
  ["negative temperature", '{"model": "tiny", "prompt": "x", "options": {"temperature": -1}}', 400, /temperature/],
  ["unknown model", '{"model": "nope", "prompt": "x"}', 404, /not found/],
  ["missing model", '{"prompt": "x"}', 400, /model: missing/],
  ["unknown role", '{"model": "tiny", "messages": [{"role": "tool", "content": "x"}]}', 400, /role/],
];
for (const [what, body, status, msg] of bad) {
  test(`${what}: ${status} with a JSON error`, async () => {
    const path = body.includes("messages") ? "/api/chat" : "/api/generate";
    const r = await post(path, body);
    assert.equal(r.status, status, r.text);
    assert.match(r.json.error, msg);
  });
}

test("invalid UTF-8 in a string: 400", async () => {
  const body = Buffer.concat([Buffer.from('{"model": "tiny", "prompt": "ab'), Buffer.from([0xc3, 0x28]),
                              Buffer.from('"}')]);
  const r = await post("/api/generate", body);
  assert.equal(r.status, 400);
  assert.match(r.json.error, /UTF-8/);
});

test("a body over --max-body-bytes: 413", async () => {
  const r = await post("/api/generate", JSON.stringify({model: "tiny", prompt: "x".repeat(10000)}));
  assert.equal(r.status, 413);
  assert.match(r.json.error, /4096 bytes/);
});

test("an unknown route: 404 JSON; OpenAI routes answer in OpenAI's error shape", async () => {
  const r = await post("/api/nothing", "{}");
  assert.equal(r.status, 404);
  assert.match(r.json.error, /no route/);
  const o = await post("/v1/chat/completions", '{"model": "tiny", "messages": 5}');
  assert.equal(o.status, 400);
  assert.match(o.json.error.message, /messages: expected an array/);
});

test("a client that disconnects frees its slot at once; a full queue gets 503", async () => {
  const before = await stats(srv.url);
  const a = await openStream();  // takes the only slot
  assert.equal((await stats(srv.url)).active, 1);
  const queued = openStream();   // waits in the one queue place
  await waitForStats(srv.url, (s) => s.queued === 1, "one queued request");
  const r = await post("/api/generate", JSON.stringify({model: "tiny", prompt: "x"}));
  assert.equal(r.status, 503);
  assert.equal(r.headers["retry-after"], "1");
  assert.match(r.json.error, /queue is full/);
  a.req.destroy();               // the first client leaves: the queued one gets the slot
  const b = await queued;
  assert.ok(b.lines[0].response !== undefined);
  b.req.destroy();
  const s = await waitForStats(srv.url, (s) => s.active === 0 && s.queued === 0, "slots freed");
  assert.equal(s.cancelled - before.cancelled, 2);
  assert.equal(s.rejected - before.rejected, 1);
});

test("after all that the server still answers", async () => {
  const r = await post("/api/generate", JSON.stringify({model: "tiny", prompt: "x", stream: false,
                                                        options: {num_predict: 3}}));
  assert.equal(r.status, 200);
  assert.equal(r.json.eval_count, 3);
});

test("--timeout: an answer generating too long ends with length, and its slot is free", async () => {
  const own = await startServer(["--parallel", "1", "--timeout", "1", "--max-tokens", "100000"]);
  const url = srv.url;
  srv.url = own.url;
  try {
    const long = await openStream(100000);  // far more than a second of work
    const ended = new Promise((resolve) => long.res.on("end", resolve));
    await ended;
    const last = long.lines[long.lines.length - 1];
    assert.equal(last.done, true);
    assert.equal(last.done_reason, "length");
    assert.ok(last.eval_count < 100000);
    const r = await post("/api/generate", JSON.stringify({model: "tiny", prompt: "x", stream: false,
                                                          options: {num_predict: 2}}));
    assert.equal(r.status, 200);
    assert.equal(r.json.eval_count, 2);
  } finally {
    srv.url = url;
    assert.equal(await own.stop(), 0);
  }
});

test("--api-key-env: requests without the Bearer key get 401", async () => {
  const own = await startServer(["--api-key-env", "LLMFT_TEST_KEY"], {env: {LLMFT_TEST_KEY: "s3cret"}});
  try {
    const body = JSON.stringify({model: "tiny", prompt: "x", stream: false, options: {num_predict: 2}});
    const no = await fetch(own.url + "/api/generate", {method: "POST", body});
    assert.equal(no.status, 401);
    assert.match((await no.json()).error, /API key/);
    const wrong = await fetch(own.url + "/v1/models", {headers: {Authorization: "Bearer nope"}});
    assert.equal(wrong.status, 401);
    assert.match((await wrong.json()).error.message, /API key/);
    const ok = await fetch(own.url + "/api/generate", {method: "POST", body,
                                                       headers: {Authorization: "Bearer s3cret"}});
    assert.equal(ok.status, 200);
    assert.equal((await ok.json()).eval_count, 2);
    // The page itself needs no key (it asks for one).
    assert.equal((await fetch(own.url + "/", {headers: {Accept: "text/html"}})).status, 200);
  } finally {
    assert.equal(await own.stop(), 0);
  }
});

test("SIGTERM: answers in progress complete, new requests are refused, exit code 0", async () => {
  const own = await startServer(["--parallel", "2", "--max-tokens", "100000"]);
  const url = srv.url;
  srv.url = own.url;  // openStream and post talk to this server
  try {
    const long = await openStream(100000);  // keeps the drain open until the test lets it go
    const short = await openStream(500);
    const ended = new Promise((resolve) => short.res.on("end", resolve));
    own.proc.kill("SIGTERM");
    await waitForStats(own.url, (st) => st.draining, "draining");
    const r = await post("/api/generate", JSON.stringify({model: "tiny", prompt: "x"}));
    assert.equal(r.status, 503);
    assert.match(r.json.error, /shutting down/);
    await ended;
    const last = short.lines[short.lines.length - 1];
    assert.equal(last.done, true);
    assert.equal(last.eval_count, 500);
    long.req.destroy();
    const [code] = await own.exited;
    assert.equal(code, 0, own.errors());
    assert.match(own.output(), /served 2 requests \(1 cancelled/);
  } finally {
    srv.url = url;
    own.proc.kill("SIGKILL");
  }
});
