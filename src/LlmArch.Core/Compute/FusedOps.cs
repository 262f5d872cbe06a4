namespace LlmArch.Compute;

// Fused forms of family computations a backend may offer through IBackend.Fused<T>(). Each one computes exactly what
// its composition in Blocks/ computes (the composition is the reference the conformance harness compares against).

/// <summary>Gated DeltaNet's delta rule (Qwen3-Next), over a ragged batch with per-slot state.</summary>
public interface IFusedDeltaRule
{
    /// <summary>
    /// q, k <c>[N, Hk, Dk]</c> (L2-normalized inside; q also scaled by 1/sqrt(Dk)), v <c>[N, Hv, Dv]</c> (value head h reads
    /// key head h / (Hv/Hk)), g (log decay) and beta <c>[N, Hv]</c>, state <c>[Slots, Hv, Dk, Dv]</c> updated in place per
    /// sequence. Per token: S = e^g S; S += k ⊗ β(v - Sᵀk); o = Sᵀq. chunkSize 0 runs token by token; otherwise the
    /// chunked parallel form over chunks of that many tokens. Result <c>[N, Hv, Dv]</c>.
    /// </summary>
    Tensor GatedDeltaRule(Tensor q, Tensor k, Tensor v, Tensor g, Tensor beta, Tensor state, StepBatch batch, int chunkSize);
}

/// <summary>Gemma 3n's AltUp stream mixing over streams packed per row as <c>[rows, N*C]</c>.</summary>
public interface IFusedAltUp
{
    /// <summary>out[r, j] = s[r, j] + Σ_i coefs[r, j*N + i] · s[r, i]; coefs <c>[rows, N*N]</c>.</summary>
    Tensor AltUpPredict(Tensor streams, Tensor coefs, int n);
    /// <summary>out[r, i] = pred[r, i] + (activated[r] - pred[r, active]) · (coefs[r, i] + 1); coefs <c>[rows, N]</c>.</summary>
    Tensor AltUpCorrect(Tensor predictions, Tensor activated, Tensor coefs, int n, int active);
}

/// <summary>Row statistics of Gemma 3n.</summary>
public interface IFusedRowStats
{
    /// <summary>Per row: x · rms(reference) / sqrt(max(mean(x²), eps)).</summary>
    Tensor MatchMagnitude(Tensor x, Tensor reference, float eps);
    /// <summary>Per row: relu(x - (mean(x) + std(x) · stdMultiplier)), population std.</summary>
    Tensor GaussianTopK(Tensor x, float stdMultiplier);
}
