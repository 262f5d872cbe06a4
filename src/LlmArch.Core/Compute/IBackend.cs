namespace LlmArch.Compute;

// THE OP SET. This file is the contract every backend implements and every model is written against; the
// conformance harness (Compute/Conformance) checks any backend op by op against the scalar references.
//
// Conventions
// - Activations are F32 tensors handed out by the backend (scratch: valid until the next ResetScratch, i.e. one
//   forward step; persistent: Allocate/Free). Index tensors are I32. Weights may be any stored dtype.
// - Shapes are row-major and contiguous, rank <= 4, the last dim contiguous. Tokens of a step are flattened: a step
//   over S sequences with N tokens in all has activations [N, C], heads [N, H, D] (see StepBatch).
// - Every op allocates its result from scratch unless it says "in place". No op reads back to the host: the only
//   device-to-host traffic is Download, called by generation code for logits.
// - Shape errors throw ArgumentException (a bug in the caller); bad data from files throws LlmArchInputException.
//
// The op list (22 compute ops + memory):
//   memory      Allocate, Free, PlaceWeight, Empty, ResetScratch, View, Upload, Download, Copy, Fill, Prepare
//   matmul      MatMul (x · Wᵀ, any weight dtype/layout), BatchMatMul (activation · activation, or per-batch weights),
//               MatMulById (gathered by expert id from device memory)
//   elementwise Unary, Binary (numpy broadcasting), Glu, Cast
//   rows        RmsNorm, LayerNorm, Softmax, TopK, Reduce (any axis)
//   data        Gather (rows by id, any table dtype), TakeAlong (last dim by index), ScatterAdd, Slice, Concat, Transpose
//   sequence    Rope (positions from device memory), Attention (positions + mask descriptor, reads the cache),
//               CacheWrite, CausalConv1d (per-sequence rolling state)
// Family computations (Gated DeltaNet's rule, AltUp, MoE routing, MLA's head-wise linear) are compositions of these
// in Blocks/; a backend may offer a fused form through Fused<T>() (interfaces in FusedOps.cs), which Blocks use when
// present, keeping the composition as the reference and the fallback. Backward passes for training are expressible
// over the same set: MatMul/BatchMatMul give both gradients, Gather's is ScatterAdd, Reduce's is Binary broadcasting.

/// <summary>Element-wise functions of one tensor; <c>a</c> and <c>b</c> are the op's parameters where it has them.</summary>
public enum UnaryOp
{
    /// <summary>a·x + b.</summary>
    Affine,
    Neg, Abs, Exp, Log, Log1p, Sqrt, Rsqrt, Square, Floor, Tanh, Sigmoid,
    /// <summary>x·sigmoid(x).</summary>
    Silu,
    /// <summary>exact GELU (erf).</summary>
    Gelu,
    /// <summary>tanh-approximated GELU.</summary>
    GeluTanh,
    Relu,
    /// <summary>log(1 + e^x) (torch's threshold 20: x above it passes through).</summary>
    Softplus,
    /// <summary>a·tanh(x / a).</summary>
    Softcap,
    /// <summary>min(max(x, a), b).</summary>
    Clamp,
}

/// <summary>Element-wise functions of two tensors (numpy broadcasting).</summary>
public enum BinaryOp { Add, Sub, Mul, Div, Max, Min, /** 1 where a >= b, else 0. */ GreaterEqual }

/// <summary>Reductions over one axis (the axis is kept with size 1).</summary>
public enum ReduceOp { Sum, Mean, Max, Min, /** mean of squares */ MeanSquare }

/// <summary>The gated activation of an expert (or dense) MLP: how act(gate) and up combine.</summary>
public enum GluKind
{
    /// <summary>silu(gate) * up (Llama, Mixtral, Qwen, DeepSeek, GLM, MiniMax, Llama 4).</summary>
    SwiGlu,
    /// <summary>gelu_tanh(gate) * up (Gemma, Grok).</summary>
    GeGluTanh,
    /// <summary>gelu_erf(gate) * up.</summary>
    GeGlu,
    /// <summary>relu(gate) * up.</summary>
    ReGlu,
    /// <summary>gpt-oss: g = min(gate, limit), u = clamp(up, -limit, limit), (u + 1) * g * sigmoid(alpha * g).</summary>
    ClampedSwiGlu,
}

/// <summary>A gated activation with its parameters (limit/alpha only used by <see cref="GluKind.ClampedSwiGlu"/>).</summary>
public readonly record struct ExpertActivation(GluKind Kind, float Limit = 7f, float Alpha = 1.702f)
{
    public static ExpertActivation SwiGlu => new(GluKind.SwiGlu);
    public static ExpertActivation GeGluTanh => new(GluKind.GeGluTanh);
    /// <summary>gpt-oss's defaults: limit 7, alpha 1.702.</summary>
    public static ExpertActivation GptOss(float limit = 7f, float alpha = 1.702f) => new(GluKind.ClampedSwiGlu, limit, alpha);

    /// <summary>The gated form of a plain activation (silu → SwiGLU, ...).</summary>
    public static ExpertActivation Of(UnaryOp act) => act switch
    {
        UnaryOp.Silu => new(GluKind.SwiGlu),
        UnaryOp.GeluTanh => new(GluKind.GeGluTanh),
        UnaryOp.Gelu => new(GluKind.GeGlu),
        UnaryOp.Relu => new(GluKind.ReGlu),
        _ => throw new ArgumentException($"{act} has no gated form"),
    };
}

/// <summary>The attention mask and scaling of one layer (the "mask descriptor"): always causal.</summary>
public struct AttentionParams
{
    /// <summary>Multiplier of q·k (usually 1/sqrt(head_dim)).</summary>
    public float Scale;
    /// <summary>Sliding window: a query at p sees keys in (p - Window, p]. 0 = unlimited.</summary>
    public int Window;
    /// <summary>Chunked attention: a query sees keys of its own chunk of this size only. 0 = none.</summary>
    public int Chunk;
    /// <summary>Logit softcap: s = cap * tanh(s / cap). 0 = none.</summary>
    public float Softcap;
    /// <summary>Learned per-head sink logit <c>[Hq]</c> F32 that joins the softmax denominator (gpt-oss).</summary>
    public Tensor? Sinks;
    /// <summary>Values are the first <see cref="ValueDim"/> channels of the keys (MLA's absorbed latent cache); v is null.</summary>
    public bool ValueIsKeyPrefix;
    /// <summary>With <see cref="ValueIsKeyPrefix"/>: the value width.</summary>
    public int ValueDim;
    /// <summary>Grok's length temperature: a query at position p > L multiplies its (softcapped) logits by
    /// log2(p) / log2(L). 0 = none.</summary>
    public int TemperatureLength;
}

/// <summary>
/// The backend-neutral op set. Model and block code call only these; a new backend implements them and the models
/// do not change. See the header of this file for the conventions.
/// </summary>
public interface IBackend
{
    DeviceKind Device { get; }
    /// <summary>A short description ("cpu (2 threads, avx512)", "cuda:0 NVIDIA H200").</summary>
    string Name { get; }
    int Threads { get; }

    // ---------------- memory ----------------

    /// <summary>A persistent zero-filled tensor on this device (caches, recurrent states, tables); lives until <see cref="Free"/>.</summary>
    Tensor Allocate(DType dtype, Shape shape, string name);
    /// <summary>Releases a tensor from <see cref="Allocate"/> or <see cref="PlaceWeight"/> (no-op for memory the backend does not own).</summary>
    void Free(Tensor t);
    /// <summary>
    /// A weight on this device: the CPU uses host memory (a memory map, or a host array) as it is; a GPU uploads it
    /// once (with its block scales). Weights are read-only from then on.
    /// </summary>
    Tensor PlaceWeight(Tensor host);
    /// <summary>Scratch memory (contents undefined), valid until the next <see cref="ResetScratch"/>.</summary>
    Tensor Empty(Shape shape, DType dtype = DType.F32);
    /// <summary>Starts a new step: scratch handed out before is reused from here on.</summary>
    void ResetScratch();
    /// <summary>A view (no copy) of <paramref name="count"/>-compatible elements of x starting at element <paramref name="offset"/>.</summary>
    Tensor View(Tensor x, Shape shape, long offset = 0);
    /// <summary>Copies host values into x starting at element <paramref name="offset"/> (F32 into F32, int into I32).</summary>
    void Upload<T>(ReadOnlySpan<T> values, Tensor x, long offset = 0) where T : unmanaged;
    /// <summary>Copies elements [offset, offset + dst.Length) of x to the host, converting F32/BF16/F16 to float.</summary>
    void Download<T>(Tensor x, Span<T> dst, long offset = 0) where T : unmanaged;
    /// <summary>dst = src (same dtype and element count; either may be a view).</summary>
    void Copy(Tensor src, Tensor dst);
    /// <summary>Every element of x set to value, in place.</summary>
    void Fill(Tensor x, float value);
    /// <summary>Puts the step's layout on the device (token ids, positions, sequence table); call once per step before the ops.</summary>
    void Prepare(StepBatch batch);

    // ---------------- matmul ----------------

    /// <summary>
    /// y = x · Wᵀ + bias: x <c>[..., K]</c> F32, w <c>[O, K]</c> in any stored dtype (F32/BF16/F16/FP8/MXFP4/Q8_0/...,
    /// or <see cref="Tensor.ColumnMajor"/> storage), bias <c>[O]</c> F32: <c>[..., O]</c>.
    /// </summary>
    Tensor MatMul(Tensor x, Tensor w, Tensor? bias = null);
    /// <summary>
    /// Batched product: a <c>[Bt, M, K]</c> F32 times b <c>[Bt, K, N]</c> (or, with <paramref name="transposeB"/>,
    /// b <c>[Bt, N, K]</c> in any weight dtype): <c>[Bt, M, N]</c>. b's batch dim may be 1 (broadcast).
    /// </summary>
    Tensor BatchMatMul(Tensor a, Tensor b, bool transposeB);
    /// <summary>
    /// Mixture-of-experts product gathered by id: x <c>[N, 1, K]</c> (the same input for every slot) or <c>[N, S, K]</c>,
    /// ids <c>[N, S]</c> I32 in device memory, weights of E experts each <c>[O, K]</c>, bias <c>[E, O]</c> F32 optional:
    /// y[n, s] = W[ids[n, s]] · x[n, s] + bias[ids[n, s]], <c>[N, S, O]</c>. An id of -1 gives a zero row (a pair whose
    /// expert another device owns, under expert parallelism).
    /// </summary>
    Tensor MatMulById(Tensor x, ExpertWeights w, Tensor ids, Tensor? bias = null);

    // ---------------- element-wise ----------------

    Tensor Unary(Tensor x, UnaryOp op, float a = 0f, float b = 0f);
    /// <summary>a op b with numpy broadcasting (shapes right-aligned, size-1 dims repeat); result has the broadcast shape.</summary>
    Tensor Binary(Tensor a, Tensor b, BinaryOp op);
    /// <summary>a = a op b in place; b must broadcast to a's shape.</summary>
    void BinaryInPlace(Tensor a, Tensor b, BinaryOp op);
    /// <summary>
    /// Gated activation: act(gate) · up for gate and up <c>[..., I]</c>; or, with <paramref name="up"/> null, of a fused
    /// <c>[..., 2I]</c> whose first half is gate (or, <paramref name="interleaved"/>, gate the even and up the odd
    /// channels, gpt-oss): <c>[..., I]</c>.
    /// </summary>
    Tensor Glu(Tensor gate, Tensor? up, in ExpertActivation act, bool interleaved = false);
    /// <summary>Converts between F32, BF16, F16 and I32 (float to int truncates toward zero).</summary>
    Tensor Cast(Tensor x, DType dtype);

    // ---------------- rows ----------------

    /// <summary>RMSNorm over the last dim: x / sqrt(mean(x²) + eps) · (offset + w); w may be null (weight-free).</summary>
    Tensor RmsNorm(Tensor x, Tensor? w, float eps, float offset = 0f);
    Tensor LayerNorm(Tensor x, Tensor? w, Tensor? b, float eps);
    /// <summary>Softmax over the last dim.</summary>
    Tensor Softmax(Tensor x);
    /// <summary>The k largest values of each row (descending; ties: the lower index first) and their indices (I32).</summary>
    (Tensor Values, Tensor Indices) TopK(Tensor x, int k);
    /// <summary>Reduces one axis, keeping it with size 1.</summary>
    Tensor Reduce(Tensor x, ReduceOp op, int axis = -1);

    // ---------------- data movement ----------------

    /// <summary>Rows of table <c>[V, C]</c> (any dtype, dequantized) at ids <c>[N]</c> I32: <c>[N, C]</c> F32. Ids must be in range;
    /// -1 gives a zero row (a row another device holds, under vocabulary parallelism).</summary>
    Tensor Gather(Tensor table, Tensor ids);
    /// <summary>y[r, j] = x[r, idx[r, j]]: x <c>[..., C]</c>, idx <c>[..., k]</c> I32 with the same leading dims: <c>[..., k]</c>.</summary>
    Tensor TakeAlong(Tensor x, Tensor idx);
    /// <summary>dst[ids[i], :] += src[i, :] for every row i of src (repeated ids accumulate), in place.</summary>
    void ScatterAdd(Tensor dst, Tensor ids, Tensor src);
    /// <summary>Elements [start, start + len) of one axis, copied.</summary>
    Tensor Slice(Tensor x, int start, int len, int axis = -1);
    /// <summary>Concatenation along one axis (all other dims equal).</summary>
    Tensor Concat(Tensor a, Tensor b, int axis = -1);
    /// <summary>x with dims <paramref name="d0"/> and <paramref name="d1"/> swapped, copied.</summary>
    Tensor Transpose(Tensor x, int d0, int d1);

    // ---------------- sequence ----------------

    /// <summary>
    /// RoPE in place on x <c>[N, H, D]</c> at each token's position (batch.Positions): the first table.RotaryDim
    /// channels rotate, as half-split pairs (i, i + R/2) or <paramref name="interleaved"/> pairs (2i, 2i + 1).
    /// </summary>
    void Rope(Tensor x, StepBatch batch, RopeTable table, bool interleaved);
    /// <summary>
    /// Causal attention of the step's queries q <c>[N, Hq, Dk]</c> over, for each token of sequence s at position p,
    /// the keys of positions lo..p of s: those before the step (positions &lt; batch.Start[s]) from the cache slot of s,
    /// the step's own from k <c>[N, Hkv, Dk]</c> / v <c>[N, Hkv, Dv]</c>. lo follows the window or chunk of
    /// <paramref name="p"/>. GQA: query head h reads kv head h / (Hq / Hkv). cache may be null when every sequence
    /// starts at 0. Does not write the cache (see <see cref="CacheWrite"/>). Result <c>[N, Hq, Dv]</c>.
    /// </summary>
    Tensor Attention(Tensor q, Tensor k, Tensor? v, KvCache? cache, StepBatch batch, in AttentionParams p);
    /// <summary>Stores the step's k (and v) rows at their sequences' slots and positions (a ring keeps position % capacity).</summary>
    void CacheWrite(KvCache cache, Tensor k, Tensor? v, StepBatch batch);
    /// <summary>
    /// Causal depthwise conv1d over each sequence's tokens: x <c>[N, Ch]</c>, weight <c>[Ch, K]</c> F32, state
    /// <c>[Slots, K-1, Ch]</c> holding each slot's last K-1 inputs (zeros for a new sequence). y[t] = Σ_j w[j] · in[t-(K-1)+j],
    /// optionally SiLU; each sequence's state is updated in place.
    /// </summary>
    Tensor CausalConv1d(Tensor x, Tensor weight, Tensor state, StepBatch batch, bool silu);

    // ---------------- fused forms ----------------

    /// <summary>This backend as <typeparamref name="T"/> (one of the interfaces in FusedOps.cs) when it implements that fused form and it is enabled; else null.</summary>
    T? Fused<T>() where T : class;
}
