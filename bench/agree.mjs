// The llama.cpp side of bench/agree.sh: teacher-forced next-token prediction at every position of a token sequence,
// with llama.cpp (node-llama-cpp's prebuilt CPU binaries), in one batch as llmarch's prefill does. Prints JSON: per
// position the top-5 token ids and their raw logits.
// usage: node agree.mjs <model.gguf> <ids.json> <threads>
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { readFileSync } from "node:fs";

const [modelPath, idsPath, T = "2"] = process.argv.slice(2);
const ids = JSON.parse(readFileSync(idsPath, "utf8"));
const llama = await getLlama({ gpu: false, build: "never", maxThreads: +T, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath, gpuLayers: 0, useMmap: true });
const context = await model.createContext({ contextSize: ids.length + 16, batchSize: ids.length, threads: { ideal: +T, min: +T }, sequences: 1 });
const seq = context.getSequence();
const input = ids.map(t => [t, { generateNext: { token: true, logits: { filter: { tokens: [], includeTop: 5 } } } }]);
const out = await seq.controlledEvaluate(input);
const rows = out.map(o => {
  const top = [...o.next.logits.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5);
  return { ids: top.map(e => e[0]), logits: top.map(e => e[1]), token: o.next.token };
});
console.log(JSON.stringify(rows));
await context.dispose(); await model.dispose(); await llama.dispose();
