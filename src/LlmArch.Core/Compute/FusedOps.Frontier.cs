namespace LlmArch.Compute;

// Fused forms of the frontier families' computations (same contract as FusedOps.cs: each computes exactly what its
// composition in Blocks/ computes, which stays the reference and the fallback of a backend without it).

/// <summary>Mamba2's selective scan (Nemotron-H), over a ragged batch with per-slot state.</summary>
public interface IFusedMamba2Scan
{
    /// <summary>
    /// x <c>[N, H, P]</c>, dt <c>[N, H]</c> (already softplus'ed and clamped), a = -exp(A_log) <c>[H]</c>, B and C <c>[N, H, Ns]</c>,
    /// state <c>[Slots, H, P, Ns]</c> updated in place per sequence. Per token: S = exp(dt·a)·S + dt·x ⊗ B; y = S·C.
    /// chunkSize 0 runs token by token; otherwise the chunked form. Result <c>[N, H, P]</c> (no D skip).
    /// </summary>
    Tensor Mamba2Scan(Tensor x, Tensor dt, Tensor a, Tensor b, Tensor c, Tensor state, StepBatch batch, int chunkSize);
}

/// <summary>MiniMax's lightning attention (linear attention with a per-head decay), over a ragged batch with per-slot state.</summary>
public interface IFusedLightning
{
    /// <summary>
    /// q, k, v <c>[N, H, D]</c>, stepDecay exp(-slope) <c>[H]</c>, state <c>[Slots, H, D, D]</c> updated in place per sequence.
    /// Per token: KV = r·KV + kᵀv; o = q·KV. blockSize 0 runs token by token; otherwise the block form. Result <c>[N, H, D]</c>.
    /// </summary>
    Tensor LightningAttention(Tensor q, Tensor k, Tensor v, Tensor stepDecay, Tensor state, StepBatch batch, int blockSize);
}

/// <summary>Kimi Delta Attention's rule (the gated delta rule with per-channel decay), over a ragged batch with per-slot state.</summary>
public interface IFusedKda
{
    /// <summary>
    /// q, k <c>[N, H, Dk]</c> (L2-normalized inside; q also scaled by 1/sqrt(Dk)), v <c>[N, H, Dv]</c>, g <c>[N, H, Dk]</c> log decays,
    /// beta <c>[N, H]</c>, state <c>[Slots, H, Dk, Dv]</c> updated in place per sequence. Per token: S = diag(e^g) S;
    /// S += k ⊗ β(v - Sᵀk); o = Sᵀq. chunkSize 0 runs token by token; otherwise the chunked form. Result <c>[N, H, Dv]</c>.
    /// </summary>
    Tensor KdaRule(Tensor q, Tensor k, Tensor v, Tensor g, Tensor beta, Tensor state, StepBatch batch, int chunkSize);
}
