// Generation speed of a GGUF file in llama.cpp (node-llama-cpp's prebuilt CPU binary), measured
// as bench/bench_generate measures llmft's decoder: a random prompt of PROMPT tokens, then greedy
// decoding to NEW tokens; prefill (to the first new token) and decode timed apart; the median of
// REPEATS runs after a warm-up. One JSON line. Used by bench/llama_cpp.sh.
//   node bench.mjs FILE [PROMPT=40] [NEW=128] [REPEATS=3] [THREADS=all cores]
import {getLlama} from "node-llama-cpp";
import {availableParallelism} from "node:os";

const [file, promptLen = 40, newTokens = 128, repeats = 3, threads = availableParallelism()] =
  [process.argv[2], ...process.argv.slice(3).map(Number)];
const llama = await getLlama({gpu: false, build: "never", skipDownload: true,
                              usePrebuiltBinaries: true, progressLogs: false, logLevel: "error",
                              maxThreads: threads});
const model = await llama.loadModel({modelPath: file});
const context = await model.createContext({contextSize: 256, sequences: 1, threads});
let s = 2;  // a fixed pseudo-random prompt
const prompt = Array.from({length: promptLen}, () => (s = (s * 1103515245 + 12345) % 2147483648) % 50000);
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const prefill = [], decode = [];
for (let rep = 0; rep <= repeats; ++rep) {  // rep 0: warm-up
  const seq = context.getSequence();
  const t0 = performance.now();
  let t1 = 0, n = 0;
  for await (const t of seq.evaluate(prompt, {temperature: 0})) {
    if (++n === 1) t1 = performance.now();
    if (n >= newTokens) break;
  }
  const t2 = performance.now();
  seq.dispose();
  if (rep > 0) prefill.push((t1 - t0) / 1e3), decode.push((t2 - t1) / 1e3);
}
const dm = median(decode), pm = median(prefill);
console.log(JSON.stringify({
  bench: "llama.cpp", file, threads, prompt_tokens: promptLen, new_tokens: newTokens,
  prefill_tok_s: +(promptLen / pm).toFixed(1), decode_tok_s: +((newTokens - 1) / dm).toFixed(2),
  decode_tok_s_min: +((newTokens - 1) / Math.max(...decode)).toFixed(2),
  decode_tok_s_max: +((newTokens - 1) / Math.min(...decode)).toFixed(2),
}));
await context.dispose();
await model.dispose();
await llama.dispose();
