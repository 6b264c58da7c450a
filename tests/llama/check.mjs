// Runs a GGUF file in a real llama.cpp (node-llama-cpp's prebuilt CPU binary; never downloads or
// builds: build "never", skipDownload) for tests/e2e/test_llama_cpp.cpp.
//   node check.mjs REQUEST.json > RESULT.json
// REQUEST: {"model": path, "tokenize": [{"text", "special"}],
//           "generate": [{"ids", "n", "probs"}], "top": k, "threads": n (default 1: a tiny
//           model decodes fastest on one thread), "context": n}
// RESULT:  {"tokenize": [[ids]], "generate": [{"tokens": [ids], "top": [[[id, logprob], ...]]}]}
// Generation is greedy (temperature 0) from the given token ids, n tokens, not stopping at
// <|endoftext|>; "top" holds, for the first `probs` steps, the k most probable next tokens with
// their log-probs.
import {getLlama} from "node-llama-cpp";
import {readFileSync} from "node:fs";

const req = JSON.parse(readFileSync(process.argv[2], "utf8"));
const llama = await getLlama({
  gpu: false,
  build: "never",
  skipDownload: true,
  usePrebuiltBinaries: true,
  progressLogs: false,
  logLevel: "error",
  maxThreads: req.threads ?? 1,
});
const model = await llama.loadModel({modelPath: req.model});
const out = {tokenize: [], generate: []};
for (const t of req.tokenize ?? []) out.tokenize.push(Array.from(model.tokenize(t.text, t.special)));

if ((req.generate ?? []).length > 0) {
  const context = await model.createContext({contextSize: req.context ?? 128, sequences: 1});
  for (const g of req.generate) {
    // Greedy tokens first; then the log-probs of the first `probs` steps (llama.cpp's sampler
    // builds the full probability list per step, slow for 50k tokens, so only a few steps).
    let seq = context.getSequence();
    const tokens = [];
    for await (const t of seq.evaluate(g.ids, {temperature: 0})) {
      tokens.push(t);
      if (tokens.length >= g.n) break;
    }
    seq.dispose();
    const top = [];
    if ((g.probs ?? 0) > 0) {
      seq = context.getSequence();
      const it = seq.evaluateWithMetadata(g.ids, {probabilities: true}, {temperature: 0});
      for await (const r of it) {
        if (r.token !== tokens[top.length]) throw new Error("greedy tokens differ between runs");
        const best = [];
        for (const [id, p] of r.probabilities) {
          best.push([id, Math.log(p)]);
          if (best.length >= (req.top ?? 10)) break;
        }
        top.push(best);
        if (top.length >= g.probs) break;
      }
      seq.dispose();
    }
    out.generate.push({tokens, top});
  }
  await context.dispose();
}
process.stdout.write(JSON.stringify(out) + "\n");
await model.dispose();
await llama.dispose();
