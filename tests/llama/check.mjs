// Runs a GGUF file in a real llama.cpp (node-llama-cpp's prebuilt CPU binary; never downloads or
// builds: build "never", skipDownload) for tests/e2e/test_llama_cpp.cpp.
//   node check.mjs REQUEST.json > RESULT.json
// REQUEST: {"model": path, "tokenize": [{"text", "special"}], "generate": [{"ids", "n"}],
//           "top": k, "threads": n}
// RESULT:  {"tokenize": [[ids]], "generate": [{"tokens": [ids], "top": [[[id, logprob], ...]]}]}
// Generation is greedy (temperature 0) from the given token ids, n tokens, not stopping at
// <|endoftext|>; "top" holds the k most probable next tokens at each step with their log-probs.
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
  maxThreads: req.threads ?? 2,
});
const model = await llama.loadModel({modelPath: req.model});
const out = {tokenize: [], generate: []};
for (const t of req.tokenize ?? []) out.tokenize.push(Array.from(model.tokenize(t.text, t.special)));

if ((req.generate ?? []).length > 0) {
  const context = await model.createContext({contextSize: req.context ?? 128, sequences: 1});
  for (const g of req.generate) {
    const seq = context.getSequence();
    const tokens = [];
    const top = [];
    const it = seq.evaluateWithMetadata(g.ids, {probabilities: true}, {temperature: 0});
    for await (const r of it) {
      tokens.push(r.token);
      const best = [];
      for (const [id, p] of r.probabilities) {
        best.push([id, Math.log(p)]);
        if (best.length >= (req.top ?? 10)) break;
      }
      top.push(best);
      if (tokens.length >= g.n) break;
    }
    seq.dispose();
    out.generate.push({tokens, top});
  }
  await context.dispose();
}
process.stdout.write(JSON.stringify(out) + "\n");
await model.dispose();
await llama.dispose();
