// Starts `llmft serve` on a free port for one test file and stops it after. The binary comes from
// LLMFT_BINARY (set by ctest); the model defaults to random:tiny (noise, but deterministic).
import {spawn} from "node:child_process";
import {once} from "node:events";

export async function startServer(extraArgs = [], {model = "random:tiny", name = "tiny", env = {}} = {}) {
  const bin = process.env.LLMFT_BINARY;
  if (!bin) throw new Error("LLMFT_BINARY is not set (ctest sets it to the built llmft)");
  const args = ["serve", "--model", model, "--name", name, "--port", "0", "--threads", "1",
                ...extraArgs];
  const proc = spawn(bin, args, {stdio: ["ignore", "pipe", "pipe"], env: {...process.env, ...env}});
  let out = "", err = "";
  proc.stderr.on("data", (d) => { err += d; });
  const url = await new Promise((resolve, reject) => {
    proc.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) resolve(m[1]);
    });
    proc.on("exit", (code) => reject(new Error(`llmft serve exited (${code}) before listening:\n${err}`)));
  });
  const exited = once(proc, "exit");
  return {
    url, proc, name,
    output: () => out,
    errors: () => err,
    // SIGTERM, then the exit code.
    async stop() {
      if (proc.exitCode !== null) return proc.exitCode;
      proc.kill("SIGTERM");
      const [code] = await exited;
      return code;
    },
    exited,
  };
}

// GET /llmft/stats.
export async function stats(url) {
  const r = await fetch(url + "/llmft/stats");
  return r.json();
}

// Polls /llmft/stats until pred(stats) holds (the server's own counters; no fixed sleeps).
export async function waitForStats(url, pred, what) {
  for (let i = 0; i < 2000; i++) {
    const s = await stats(url);
    if (pred(s)) return s;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error("server never reached: " + what + " " + JSON.stringify(await stats(url)));
}
