// Compares the teacher-forced top-5 lists of llama.cpp (agree.mjs) and llmarch (Agree logits) for bench/agree.sh.
// usage: node agree-compare.mjs <llamacpp.json> <llmarch.json> <label> [ids.json]
import { readFileSync } from "node:fs";
const [pa, pb, label, pids] = process.argv.slice(2);
const a = JSON.parse(readFileSync(pa, "utf8")), b = JSON.parse(readFileSync(pb, "utf8"));
const ids = pids ? JSON.parse(readFileSync(pids, "utf8")) : null;
let same = 0, echo = 0;
const gap = [], spread = [], diff = [];
for (let i = 0; i < a.length; i++) {
  if (a[i].ids[0] === b[i].ids[0]) same++;
  if (ids && b[i].ids[0] === ids[i]) echo++;
  gap.push(b[i].logits[0] - b[i].logits[1]);
  spread.push(b[i].logits[0] - b[i].logits[4]);
  const j = b[i].ids.indexOf(a[i].ids[0]);
  if (j >= 0) diff.push(Math.abs(a[i].logits[0] - b[i].logits[j]));
}
const med = v => { const s = [...v].sort((x, y) => x - y); return s.length ? s[Math.floor(s.length / 2)] : NaN; };
console.log(`${label.padEnd(5)} top-1 agreement ${same}/${a.length} (${(100 * same / a.length).toFixed(1)}%); ` +
  `llmarch logits: median top-1 - top-2 ${med(gap).toFixed(3)}, median top-1 - top-5 ${med(spread).toFixed(3)}; ` +
  `median |llama.cpp - llmarch| logit of the llama.cpp top-1 token ${med(diff).toFixed(4)}` +
  (ids ? `; top-1 = the input token at ${echo}/${a.length}` : ""));
console.log(JSON.stringify({ label, agree: same, positions: a.length }));
