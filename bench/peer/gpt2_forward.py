#!/usr/bin/env python3
"""The PyTorch peer of `mechanist bench`: the same GPT-2 forward on the very same safetensors weights.

Written directly against torch (no transformers, which Debian does not package), following Hugging
Face's GPT2 modelling code: learned positions, pre-LayerNorm blocks, Conv1D weights stored [in, out],
gelu_new, tied unembedding. Prints one JSON object of timings in milliseconds.
Usage: gpt2_forward.py MODEL_DIR THREADS REPEATS [LLAMA_DIR]
"""
import json, math, struct, sys, time
import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[b:en], dtype=DTYPES[e["dtype"]]).reshape(e["shape"]).copy())
    return out


class Gpt2:
    def __init__(self, folder):
        cfg = json.load(open(f"{folder}/config.json"))
        self.d, self.h, self.layers = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
        self.eps = cfg.get("layer_norm_epsilon", 1e-5)
        w = load_safetensors(f"{folder}/model.safetensors")
        self.w = {k.removeprefix("transformer."): v for k, v in w.items()}

    def block(self, x, i, past=None):
        p = f"h.{i}."
        w = self.w
        b, t, d = x.shape
        a = F.layer_norm(x, (d,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], self.eps)
        qkv = torch.addmm(w[p + "attn.c_attn.bias"], a.reshape(-1, d), w[p + "attn.c_attn.weight"]).view(b, t, 3 * d)
        q, k, v = qkv.split(d, dim=2)
        q = q.view(b, t, self.h, -1).transpose(1, 2)
        k = k.view(b, t, self.h, -1).transpose(1, 2)
        v = v.view(b, t, self.h, -1).transpose(1, 2)
        if past is not None:
            k = torch.cat([past[0], k], 2)
            v = torch.cat([past[1], v], 2)
        present = (k, v)
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        n_k = k.shape[2]
        mask = torch.ones(t, n_k, dtype=torch.bool).tril(n_k - t)
        s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
        z = torch.matmul(s.softmax(-1), v).transpose(1, 2).reshape(b, t, d)
        x = x + torch.addmm(w[p + "attn.c_proj.bias"], z.reshape(-1, d), w[p + "attn.c_proj.weight"]).view(b, t, d)
        m = F.layer_norm(x, (d,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], self.eps)
        hdn = F.gelu(torch.addmm(w[p + "mlp.c_fc.bias"], m.reshape(-1, d), w[p + "mlp.c_fc.weight"]), approximate="tanh")
        x = x + torch.addmm(w[p + "mlp.c_proj.bias"], hdn, w[p + "mlp.c_proj.weight"]).view(b, t, d)
        return x, present

    def forward(self, ids, past=None):
        offset = 0 if past is None else past[0][0].shape[2]
        pos = torch.arange(offset, offset + ids.shape[1])
        x = self.w["wte.weight"][ids] + self.w["wpe.weight"][pos]
        presents = []
        for i in range(self.layers):
            x, pr = self.block(x, i, None if past is None else past[i])
            presents.append(pr)
        x = F.layer_norm(x, (self.d,), self.w["ln_f.weight"], self.w["ln_f.bias"], self.eps)
        return x @ self.w["wte.weight"].t(), presents


class Llama:
    """Hugging Face Llama semantics: RMSNorm, rotate-half rotary, grouped-query attention, SwiGLU."""

    def __init__(self, folder):
        cfg = json.load(open(f"{folder}/config.json"))
        self.d, self.h, self.kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.layers, self.eps, self.dh = cfg["num_hidden_layers"], cfg["rms_norm_eps"], cfg["hidden_size"] // cfg["num_attention_heads"]
        self.w = load_safetensors(f"{folder}/model.safetensors")
        inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, self.dh, 2, dtype=torch.int64).float() / self.dh))
        freqs = torch.outer(torch.arange(cfg["max_position_embeddings"]).float(), inv)
        emb = torch.cat([freqs, freqs], -1)
        self.cos, self.sin = emb.cos(), emb.sin()

    def norm(self, x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def rope(self, x, t):
        cos, sin = self.cos[:t], self.sin[:t]
        x1, x2 = x[..., : self.dh // 2], x[..., self.dh // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def forward(self, ids):
        w, (b, t) = self.w, ids.shape
        x = w["model.embed_tokens.weight"][ids]
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        for i in range(self.layers):
            p = f"model.layers.{i}."
            a = self.norm(x, w[p + "input_layernorm.weight"])
            q = (a @ w[p + "self_attn.q_proj.weight"].t()).view(b, t, self.h, self.dh).transpose(1, 2)
            k = (a @ w[p + "self_attn.k_proj.weight"].t()).view(b, t, self.kv, self.dh).transpose(1, 2)
            v = (a @ w[p + "self_attn.v_proj.weight"].t()).view(b, t, self.kv, self.dh).transpose(1, 2)
            q, k = self.rope(q, t), self.rope(k, t)
            k = k.repeat_interleave(self.h // self.kv, 1)
            v = v.repeat_interleave(self.h // self.kv, 1)
            s = (q @ k.transpose(-1, -2)) / math.sqrt(self.dh)
            z = (s.masked_fill(~mask, torch.finfo(s.dtype).min).softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)
            x = x + z @ w[p + "self_attn.o_proj.weight"].t()
            m = self.norm(x, w[p + "post_attention_layernorm.weight"])
            g = F.silu(m @ w[p + "mlp.gate_proj.weight"].t()) * (m @ w[p + "mlp.up_proj.weight"].t())
            x = x + g @ w[p + "mlp.down_proj.weight"].t()
        x = self.norm(x, w["model.norm.weight"])
        return x @ w["lm_head.weight"].t()


def timed(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"median_ms": times[len(times) // 2], "min_ms": times[0]}


def blas_report():
    """Which BLAS the process loaded and which kernel it runs (threadpoolctl), and whether its GEMM is correct."""
    a, b = torch.randn(256, 192, generator=torch.Generator().manual_seed(3)), torch.randn(192, 320, generator=torch.Generator().manual_seed(4))
    exact = (a.double() @ b.double()).float()
    error = float(((a @ b) - exact).abs().max() / exact.abs().max())
    try:
        from threadpoolctl import threadpool_info
        libraries = [{k: v for k, v in i.items() if k in ("internal_api", "version", "architecture", "threading_layer", "num_threads", "filepath")}
                     for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        libraries = [{"internal_api": "unknown (python3-threadpoolctl is not installed)"}]
    return {"libraries": libraries, "gemm_relative_error": error, "torch_config": torch.__config__.show()}


def main():
    folder, threads, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    blas = blas_report()
    t0 = time.perf_counter()
    model = Gpt2(folder)
    load_ms = (time.perf_counter() - t0) * 1000
    vocab = model.w["wte.weight"].shape[0]
    g = torch.Generator().manual_seed(0)
    rows = {"load": {"median_ms": load_ms, "min_ms": load_ms}}
    with torch.inference_mode():
        for b, t in [(1, 128), (8, 128), (1, 1024)]:
            ids = torch.randint(0, vocab, (b, t), generator=g)
            rows[f"forward {b}x{t}"] = timed(lambda: model.forward(ids), repeats)

        def generate(n=64):
            ids = torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(1))
            logits, past = model.forward(ids)
            for _ in range(n):
                nxt = logits[:, -1].argmax(-1, keepdim=True)
                logits, past = model.forward(nxt, past)
        rows["generate 64 tokens (KV cache)"] = timed(generate, max(1, repeats // 2))
        if len(sys.argv) > 4:
            llama = Llama(sys.argv[4])
            for t in [128, 1024]:
                ids = torch.randint(0, llama.w["model.embed_tokens.weight"].shape[0], (1, t), generator=g)
                rows[f"llama forward 1x{t}"] = timed(lambda: llama.forward(ids), repeats)
        a, b = torch.randn(1024, 768), torch.randn(768, 3072)
        gemm = timed(lambda: a @ b, max(5, repeats))
    gflops = 2 * 1024 * 768 * 3072 / (gemm["min_ms"] / 1000) / 1e9
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "gemm_gflops": gflops, "blas": blas, "rows": rows}))


if __name__ == "__main__":
    main()
