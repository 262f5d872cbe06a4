#!/usr/bin/env python3
"""Builds the fuzzing seed corpora in fuzz/corpus/<target>/ from the repository's fixtures.

safetensors: the headers of the fixture checkpoints; config, genconfig: the fixture and preset JSON files;
tokenizer: each fixture tokenizer.json with its vocabulary cut to ~300 tokens (and the merges that still apply),
so every normalizer / pre-tokenizer / decoder / post-processor shape is seeded at a size the fuzzer can mutate;
jinja: the fixture chat templates and the Jinja test cases. Deterministic: same fixtures, same seeds."""
import glob, gzip, hashlib, json, os, struct, sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = os.path.join(root, "fuzz", "corpus")


def put(target, data, limit=64 * 1024):
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > limit:
        return
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)


for st in sorted(glob.glob(os.path.join(root, "tests/fixtures/hf/*/*.safetensors"))):
    with open(st, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = f.read(n)
    h = json.loads(header)
    # keep the seed small: metadata and the first 12 tensors, offsets rebased to fit the harness's 256 data bytes
    small, off = {}, 0
    if "__metadata__" in h:
        small["__metadata__"] = h["__metadata__"]
    for k, v in list((k, v) for k, v in h.items() if k != "__metadata__")[:12]:
        size = v["data_offsets"][1] - v["data_offsets"][0]
        if off + size > 256:
            v = dict(v, shape=[0], data_offsets=[off, off])
        else:
            v = dict(v, data_offsets=[off, off + size])
            off += size
        small[k] = v
    put("safetensors", json.dumps(small))

for cfg in sorted(glob.glob(os.path.join(root, "tests/fixtures/hf/*/config.json")) + glob.glob(os.path.join(root, "src/LlmArch.Core/Analysis/Presets/*.json"))):
    put("config", open(cfg, "rb").read())
    put("model", open(cfg, "rb").read())
for g in sorted(glob.glob(os.path.join(root, "tests/fixtures/hf/*/generation_config.json"))):
    put("genconfig", open(g, "rb").read())

for tj in sorted(glob.glob(os.path.join(root, "tests/fixtures/tokenizers/*/tokenizer.json*"))):
    raw = gzip.open(tj).read() if tj.endswith(".gz") else open(tj, "rb").read()
    t = json.loads(raw)
    m = t["model"]
    vocab = m["vocab"]
    keep = dict(sorted(vocab.items(), key=lambda kv: kv[1])[:300])
    merges = []
    for mg in m.get("merges", []):
        a, b = mg.split(" ", 1) if isinstance(mg, str) else mg
        if a in keep and b in keep and a + b in keep:
            merges.append(mg)
    m["vocab"], m["merges"] = keep, merges
    t["added_tokens"] = [a for a in t.get("added_tokens", [])][:20]
    for a in t["added_tokens"]:
        a["id"] = 300 + t["added_tokens"].index(a)
    if m.get("unk_token") not in keep:
        m.pop("unk_token", None)
    put("tokenizer", json.dumps(t, ensure_ascii=False))

for tc in sorted(glob.glob(os.path.join(root, "tests/fixtures/tokenizers/*/tokenizer_config.json"))):
    ct = json.load(open(tc)).get("chat_template")
    if isinstance(ct, str):
        put("jinja", ct)
    elif isinstance(ct, list):
        for e in ct:
            put("jinja", e["template"])
for j in sorted(glob.glob(os.path.join(root, "tests/fixtures/tokenizers/*/chat_template.jinja"))):
    put("jinja", open(j, "rb").read())
cases = json.load(open(os.path.join(root, "tests/LlmArch.Tests/Tokenization/JinjaCases.json")))
for c in cases if isinstance(cases, list) else cases.get("cases", []):
    if isinstance(c, dict) and isinstance(c.get("template"), str):
        put("jinja", c["template"])

# Hand-written seeds for shapes the fixtures lack.
put("genconfig", '{"do_sample": true, "temperature": 0.6, "top_k": 20, "top_p": 0.95, "min_p": 0.0, "repetition_penalty": 1.05, "eos_token_id": [151645, 151643], "bos_token_id": 151643, "max_new_tokens": 2048}')
put("genconfig", '{"eos_token_id": 2, "pad_token_id": 0, "transformers_version": "4.56.0"}')
tiny_vocab = '{"a": 0, "b": 1, "ab": 2, "\u2581": 3, "<0x41>": 4, "1": 5}'
for pre in ['{"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": true}',
            '{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\\\p{N}{1,3}"}, "behavior": "Isolated", "invert": false}, {"type": "Digits", "individual_digits": true}, {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]}',
            '{"type": "WhitespaceSplit"}']:
    put("tokenizer", '{"added_tokens": [{"id": 6, "content": "<s>", "special": true, "normalized": false}], "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}, '
        f'"pre_tokenizer": {pre}, "post_processor": {{"type": "TemplateProcessing", "single": [{{"SpecialToken": {{"id": "<s>", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}], "special_tokens": {{"<s>": {{"id": "<s>", "ids": [6], "tokens": ["<s>"]}}}}}}, '
        f'"decoder": {{"type": "Sequence", "decoders": [{{"type": "Replace", "pattern": {{"String": "\u2581"}}, "content": " "}}, {{"type": "ByteFallback"}}, {{"type": "Fuse"}}]}}, '
        f'"model": {{"type": "BPE", "vocab": {tiny_vocab}, "merges": ["a b"], "byte_fallback": true, "unk_token": null}}}}')

# AFL dictionaries (fuzz/dict/TARGET.dict): the JSON keys and literals of each target's seeds, and Jinja's syntax, so
# mutations insert whole tokens instead of breaking the JSON on the first byte.
dict_dir = os.path.join(root, "fuzz", "dict")
os.makedirs(dict_dir, exist_ok=True)


def afl_escape(tok):
    b = tok.encode("utf-8")
    return "".join(chr(c) if 32 <= c < 127 and c not in (34, 92) else "\\x%02x" % c for c in b)


def write_dict(target, tokens):
    with open(os.path.join(dict_dir, target + ".dict"), "w") as f:
        for i, t in enumerate(sorted(set(tokens))):
            if 0 < len(t.encode("utf-8")) <= 64:
                f.write(f'k{i}="{afl_escape(t)}"\n')


def json_tokens(value, acc):
    if isinstance(value, dict):
        for k, v in value.items():
            acc.add(f'"{k}"')
            acc.add(f'"{k}": ')
            json_tokens(v, acc)
    elif isinstance(value, list):
        for v in value[:50]:
            json_tokens(v, acc)
    elif isinstance(value, str) and len(value) <= 40:
        acc.add(json.dumps(value))


punct = ["{", "}", "[", "]", ",", ":", "null", "true", "false", "-1", "0", "1e308", "-0.0", "2147483648", "9223372036854775808",
         "\"\\ud800\"", "\"\\u0000\"", "[[[[[[[[", "{}", "[]", "1.5", "NaN"]
for target in ["safetensors", "config", "model", "genconfig", "tokenizer"]:
    acc = set(punct)
    d = os.path.join(out, target)
    for f in os.listdir(d):
        try:
            json_tokens(json.loads(open(os.path.join(d, f), "rb").read()), acc)
        except ValueError:
            pass
    write_dict(target, acc)
write_dict("jinja", ["{{", "}}", "{%", "%}", "{#", "#}", "{%-", "-%}", "if ", "elif ", "else", "endif", "for ", " in ", "endfor",
                     "set ", "endset", "macro ", "endmacro", "call", "endcall", "filter ", "endfilter", "raw", "endraw", "break",
                     "continue", "do ", "namespace(", "range(", "loop.index", "loop.last", "messages", "message['content']",
                     "message.role", "tools", "add_generation_prompt", "raise_exception(", "|tojson", "|length", "|join(",
                     "|trim", "|replace(", "|map(", "|selectattr(", "|default(", "|string", "|list", "|sort", "|center(",
                     " is defined", " is none", " is string", " not ", " and ", " or ", "~", "**", "//", "(", ")", "[", "]",
                     "'", '"', "10**9", "[1]*", ".append(", ".split(", ".format(", ".items()", "true", "none", "caller()"])

for t in sorted(os.listdir(out)):
    print(f"{t}: {len(os.listdir(os.path.join(out, t)))} seeds")
