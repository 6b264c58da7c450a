#!/usr/bin/env python3
"""Writes the small seed corpora of the fuzz harnesses (tests/fuzz/corpus/<name>/): a few valid
inputs of each format and a few near misses. Run once; the output is committed."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(name, fname, data):
    d = os.path.join(HERE, "corpus", name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def safetensors(tensors, metadata=None):
    header, blob = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + blob


def f32(n, start=0.0):
    return struct.pack(f"<{n}f", *[start + 0.01 * i for i in range(n)])


# tokenizer
put("tokenizer", "english.txt", "Hello world! It's a test, isn't it? 123 4567\n")
put("tokenizer", "unicode.txt", "Grüße, 世界! 🙂 naïve café — ταχύ\t\r\n")
put("tokenizer", "special.txt", "a<|endoftext|>b <|endoftext|")
put("tokenizer", "spaces.txt", "   x    \n\n\n  y'll 've 's")
put("tokenizer", "bytes.bin", bytes(range(256)))
# A table cache file (src/llmft/tokenizer/bpe_cache.cpp) without its closing hash, which the
# harness appends: the 256 bytes, <|endoftext|> (256), "he" (257) = h + e, "hel" (258) = he + l.
toks = [bytes([b]) for b in range(256)] + [b"<|endoftext|>", b"he", b"hel"]
pairs = [(ord("h") << 16 | ord("e"), 257), (257 << 16 | ord("l"), 258)]
put("tokenizer", "cache.bin",
    b"LLMFTBPE" + struct.pack("<IIIIQ", 1, len(toks), 256, len(pairs), 0)
    + b"".join(struct.pack("<I", len(t)) for t in toks) + b"".join(toks)
    + b"".join(struct.pack("<I", k) for k, _ in pairs) + b"".join(struct.pack("<I", v) for _, v in pairs))

# dataset
entry = {"instruction": "Rewrite the sentence.", "input": "It is cold.", "output": "It's chilly."}
put("dataset", "array.json", json.dumps([entry, dict(entry, input="")], indent=4))
put("dataset", "lines.jsonl", json.dumps(entry) + "\n" + json.dumps(dict(entry, input="")) + "\n")
put("dataset", "bom.json", "\ufeff" + json.dumps([entry]))
put("dataset", "wrong.json", '[{"instruction": 1, "input": null}]')

# safetensors
put("safetensors", "f32.safetensors",
    safetensors([("a", "F32", [2, 3], f32(6)), ("b", "F32", [1], f32(1))], {"format": "pt"}))
put("safetensors", "f16_bf16.safetensors",
    safetensors([("h", "F16", [2], struct.pack("<2H", 0x3C00, 0x7C00)),
                 ("b", "BF16", [2], struct.pack("<2H", 0x3F80, 0x4049))]))
put("safetensors", "empty.safetensors", safetensors([("e", "F32", [0, 4], b"")]))

# hf_config
cfg = {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "layer_norm_epsilon": 1e-05,
       "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_inner": None, "n_layer": 12,
       "n_positions": 1024, "resid_pdrop": 0.1, "tie_word_embeddings": True, "vocab_size": 50257}
put("hf_config", "gpt2.json", json.dumps(cfg, indent=2))
put("hf_config", "untied.json", json.dumps(dict(cfg, tie_word_embeddings=False, n_layer=2, n_embd=8, n_head=2)))
put("hf_config", "bad.json", json.dumps(dict(cfg, n_head=7, scale_attn_weights=False)))

# checkpoint
state = {"format_version": 1, "step": 12, "epoch": 1, "batch_in_epoch": 3, "tokens_seen": 4567,
         "adam_step": 12, "train_seconds": 1.25, "extra": {"rng": [1, 2, 3]}}
put("checkpoint", "state.json", json.dumps(state, indent=2))
put("checkpoint", "record.json", json.dumps({"config": {"V": 50257, "maxT": 1024, "C": 768, "L": 12,
                                                        "NH": 12, "tied": False, "dropout": 0.1}}))
put("checkpoint", "negative.json", json.dumps(dict(state, step=-5, adam_step=-1)))

# judge_reply
put("judge_reply", "ollama_stream.ndjson",
    '{"message":{"content":"8"},"done":false}\n{"message":{"content":"5"},"done":false}\n{"done":true}\n')
put("judge_reply", "ollama.json", '{"model":"llama3","message":{"role":"assistant","content":"85"},"done":true}')
put("judge_reply", "openai_stream.sse",
    ': keep-alive\n\ndata: {"choices":[{"delta":{"content":"4"}}]}\n\ndata: {"choices":[{"delta":{"content":"2"}}]}\n\ndata: [DONE]\n\n')
put("judge_reply", "openai.json", '{"choices":[{"message":{"content":"7"},"text":"7"}]}')
put("judge_reply", "error.json", '{"error":{"message":"model not found"}}')
put("judge_reply", "generate.ndjson", '{"response":"ab","done":false}\n{"response":"","done":true}\n')


# gguf
def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, typ, payload):
    return gstr(key) + struct.pack("<I", typ) + payload


kvs = [kv("general.architecture", 8, gstr("gpt2")),
       kv("general.alignment", 4, struct.pack("<I", 32)),
       kv("gpt2.context_length", 4, struct.pack("<I", 8)),
       kv("gpt2.embedding_length", 4, struct.pack("<I", 8)),
       kv("gpt2.block_count", 4, struct.pack("<I", 1)),
       kv("gpt2.attention.head_count", 4, struct.pack("<I", 2)),
       kv("gpt2.attention.layer_norm_epsilon", 6, struct.pack("<f", 1e-5)),
       kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 2) + gstr("a") + gstr("b"))]
tinfo = gstr("token_embd.weight") + struct.pack("<IQQIQ", 2, 8, 11, 0, 0)
tinfo += gstr("output_norm.weight") + struct.pack("<IQIQ", 1, 8, 0, 8 * 11 * 4)
head = b"GGUF" + struct.pack("<IQQ", 3, 2, len(kvs)) + b"".join(kvs) + tinfo
head += b"\0" * ((32 - len(head) % 32) % 32)
put("gguf", "tiny.gguf", head + f32(8 * 11) + f32(8))
put("gguf", "v2_header_only.gguf", b"GGUF" + struct.pack("<IQQ", 2, 0, 1) + kvs[0])

# peft: adapter_config.json, a NUL byte, adapter_model.safetensors
pcfg = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "lora_dropout": 0.0, "fan_in_fan_out": True,
        "bias": "none", "target_modules": ["c_attn"], "use_rslora": False, "use_dora": False,
        "layers_to_transform": None, "task_type": "CAUSAL_LM"}
weights = []
for layer in range(2):
    base = f"base_model.model.transformer.h.{layer}.attn.c_attn."
    weights += [(base + "lora_A.weight", "F32", [2, 8], f32(16)), (base + "lora_B.weight", "F32", [24, 2], f32(48))]
put("peft", "c_attn", json.dumps(pcfg).encode() + b"\0" + safetensors(weights))
put("peft", "config_only", json.dumps(dict(pcfg, r=0, target_modules="all-linear")))

# serve_request
put("serve_request", "generate.json", json.dumps({"model": "m", "prompt": "Say hi", "stream": False,
                                                  "options": {"num_predict": 4, "temperature": 0, "seed": 1}}))
put("serve_request", "chat.json", json.dumps({"model": "m", "messages": [
    {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    "max_tokens": 4, "stream": True, "stream_options": {"include_usage": True}, "stop": ["\n"]}))
put("serve_request", "completion.json", json.dumps({"model": "m", "prompt": "Once", "max_tokens": 3,
                                                    "top_p": 0.9, "top_k": 5, "raw": True}))
put("serve_request", "bad.json", '{"model": 5, "messages": [{"role": "robot"}], "max_tokens": -1}')
