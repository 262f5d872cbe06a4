using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Blocks;

// The one mixture-of-experts block. Routing runs on the device as a composition of ops (router matmul, scoring,
// correction bias, group-limited top-k, normalization, scaling): no host round trip, so a decode step can be
// captured as a CUDA graph. The experts run as gathered matmuls by expert id (MatMulById: one per projection for
// all routed (token, slot) pairs), weighted and summed over the k slots. MoeRouting.Route is the same decision on
// the host, kept as the test reference. Each family is a RouterSpec + an expert layout + an optional shared expert:
//
//   family        scoring        top-k weights                     extras
//   Mixtral/Qwen3 Softmax        renormalized (norm_topk_prob)     -
//   Qwen3-Next    Softmax        renormalized                      shared expert * sigmoid(shared_expert_gate(x))
//   gpt-oss       TopKSoftmax    softmax over the k chosen logits  router bias, clamped SwiGLU, fused interleaved gate_up
//   DeepSeek-V3   Sigmoid        renormalized * routed_scaling     correction bias (selection only), n_group/topk_group,
//   / Kimi K2, GLM                                                 shared experts summed in
//   MiniMax-M2    Sigmoid        renormalized                      correction bias
//   Llama 4       Sigmoid, k=1   sigmoid score scales the INPUT    shared expert summed in
//   Grok          Softmax        unnormalized softmax probs        router logit softcap, GeGLU (tanh)
//   DeepSeek-V4   SqrtSoftplus   renormalized * routed_scaling     correction bias; hash-routed layers pick by token id

/// <summary>How router logits become scores.</summary>
public enum RouterScoring
{
    /// <summary>softmax over all experts, then top-k of the probabilities (Mixtral, Qwen3-MoE, Grok).</summary>
    Softmax,
    /// <summary>sigmoid per expert, then top-k (DeepSeek-V3, GLM-4.5, MiniMax-M2, Llama 4).</summary>
    Sigmoid,
    /// <summary>top-k of the raw logits, then softmax over only those k (gpt-oss).</summary>
    TopKSoftmax,
    /// <summary>sqrt(softplus(logit)) per expert, then top-k (DeepSeek-V4).</summary>
    SqrtSoftplus,
}

/// <summary>The routing rule of a MoE layer; see <see cref="MoeRouting.Route"/>.</summary>
public sealed record RouterSpec
{
    public required int Experts { get; init; }
    /// <summary>num_experts_per_tok.</summary>
    public required int TopK { get; init; }
    public RouterScoring Scoring { get; init; } = RouterScoring.Softmax;
    /// <summary>Divide the k weights by their sum (norm_topk_prob).</summary>
    public bool NormalizeTopK { get; init; }
    /// <summary>DeepSeek group-limited routing: experts split into n_group groups, a group scores the sum of its top-2
    /// selection scores, only the best topk_group groups compete. 1 = off.</summary>
    public int Groups { get; init; } = 1;
    public int TopKGroups { get; init; } = 1;
    /// <summary>e_score_correction_bias <c>[E]</c> is added to the scores for selection only, not for the weights.</summary>
    public bool CorrectionBias { get; init; }
    /// <summary>Multiplies the final weights (routed_scaling_factor).</summary>
    public float RoutedScaling { get; init; } = 1f;
    /// <summary>cap * tanh(logit / cap) before scoring (Grok's router_logit_softcapping). 0 = none.</summary>
    public float LogitSoftcap { get; init; }
    /// <summary>The weight multiplies the expert's input instead of its output (Llama 4).</summary>
    public bool ScaleInput { get; init; }

    /// <summary>Checks the spec against the config it came from (key names for the error).</summary>
    public void Validate(ModelConfig cfg, string expertsKey, string topKKey = "num_experts_per_tok")
    {
        if (Experts <= 0) throw cfg.Invalid(expertsKey, $"must be positive (got {Experts})");
        if (TopK <= 0 || TopK > Experts) throw cfg.Invalid(topKKey, $"is {TopK}; it must be between 1 and the number of experts {Experts} ({expertsKey})");
        if (Groups < 1 || Experts % Groups != 0) throw cfg.Invalid("n_group", $"is {Groups}; it must divide the {Experts} experts");
        if (Groups > 1 && (TopKGroups < 1 || TopKGroups > Groups)) throw cfg.Invalid("topk_group", $"is {TopKGroups}; it must be between 1 and n_group {Groups}");
        if (Groups > 1 && TopK > TopKGroups * (Experts / Groups)) throw cfg.Invalid(topKKey, $"is {TopK}, more than the {TopKGroups * (Experts / Groups)} experts in topk_group {TopKGroups} groups");
    }
}

/// <summary>The routing decision as a pure host function: the reference the on-device routing is tested against.</summary>
public static class MoeRouting
{
    /// <summary>
    /// Routes N tokens: <paramref name="logits"/> <c>[N, E]</c> router logits (after the router's own bias),
    /// <paramref name="correctionBias"/> <c>[E]</c> or empty; writes the chosen experts and their weights
    /// <c>[N, K]</c> (in descending order of selection score).
    /// </summary>
    public static void Route(RouterSpec s, ReadOnlySpan<float> logits, ReadOnlySpan<float> correctionBias, Span<int> experts, Span<float> weights)
    {
        int E = s.Experts, K = s.TopK;
        int N = logits.Length / E;
        if (logits.Length != N * E || experts.Length < N * K || weights.Length < N * K) throw new ArgumentException("routing buffer sizes");
        if (s.CorrectionBias && correctionBias.Length != E) throw new ArgumentException($"correction bias of {correctionBias.Length} for {E} experts");
        Span<float> score = E <= 512 ? stackalloc float[E] : new float[E];
        Span<float> choice = E <= 512 ? stackalloc float[E] : new float[E];
        Span<bool> taken = E <= 512 ? stackalloc bool[E] : new bool[E];
        int G = s.Groups, per = E / Math.Max(1, G);
        Span<float> groupScore = stackalloc float[Math.Max(1, Math.Min(G, 256))];
        Span<bool> groupOn = stackalloc bool[Math.Max(1, Math.Min(G, 256))];
        for (int n = 0; n < N; n++)
        {
            var l = logits.Slice(n * E, E);
            for (int e = 0; e < E; e++) score[e] = s.LogitSoftcap > 0 ? s.LogitSoftcap * MathF.Tanh(l[e] / s.LogitSoftcap) : l[e];
            if (s.Scoring == RouterScoring.Softmax) Softmax(score);
            else if (s.Scoring == RouterScoring.Sigmoid) for (int e = 0; e < E; e++) score[e] = 1f / (1f + MathF.Exp(-score[e]));
            else if (s.Scoring == RouterScoring.SqrtSoftplus)
                for (int e = 0; e < E; e++) score[e] = MathF.Sqrt(score[e] > 20f ? score[e] : MathF.Log(1f + MathF.Exp(score[e])));
            for (int e = 0; e < E; e++) choice[e] = s.CorrectionBias ? score[e] + correctionBias[e] : score[e];
            if (G > 1)
            {
                for (int g = 0; g < G; g++)
                {
                    float a = float.NegativeInfinity, b = float.NegativeInfinity; // the group's two best
                    for (int e = g * per; e < (g + 1) * per; e++)
                    {
                        float v = choice[e];
                        if (v > a) { b = a; a = v; } else if (v > b) b = v;
                    }
                    groupScore[g] = per >= 2 ? a + b : a;
                    groupOn[g] = false;
                }
                for (int i = 0; i < s.TopKGroups; i++)
                {
                    int best = -1;
                    for (int g = 0; g < G; g++) if (!groupOn[g] && (best < 0 || groupScore[g] > groupScore[best])) best = g;
                    groupOn[best] = true;
                }
                // The reference masks experts of dropped groups to 0 (not -inf) before the top-k.
                for (int e = 0; e < E; e++) if (!groupOn[e / per]) choice[e] = 0f;
            }
            taken.Clear();
            var idx = experts.Slice(n * K, K);
            var w = weights.Slice(n * K, K);
            for (int k = 0; k < K; k++)
            {
                int best = -1;
                for (int e = 0; e < E; e++) if (!taken[e] && (best < 0 || choice[e] > choice[best])) best = e;
                taken[best] = true;
                idx[k] = best;
                w[k] = score[best];
            }
            if (s.Scoring == RouterScoring.TopKSoftmax) Softmax(w);
            if (s.NormalizeTopK)
            {
                float sum = 0;
                for (int k = 0; k < K; k++) sum += w[k];
                sum += 1e-20f;
                for (int k = 0; k < K; k++) w[k] /= sum;
            }
            if (s.RoutedScaling != 1f) for (int k = 0; k < K; k++) w[k] *= s.RoutedScaling;
        }
    }

    private static void Softmax(Span<float> x)
    {
        float m = float.NegativeInfinity;
        foreach (float v in x) m = MathF.Max(m, v);
        float sum = 0;
        for (int i = 0; i < x.Length; i++) { x[i] = MathF.Exp(x[i] - m); sum += x[i]; }
        for (int i = 0; i < x.Length; i++) x[i] /= sum;
    }
}

/// <summary>
/// The routed experts of one MoE layer: per projection, the weights of all E experts (<see cref="ExpertWeights"/>),
/// with separate gate/up projections or one fused gate_up <c>[E, 2I, C]</c> (first half gate, or interleaved
/// even/odd as gpt-oss), optional per-expert biases <c>[E, out]</c> (F32).
/// </summary>
public sealed class ExpertSet
{
    public ExpertWeights? Gate { get; private init; }
    public ExpertWeights? Up { get; private init; }
    public ExpertWeights? GateUp { get; private init; }
    public required ExpertWeights Down { get; init; }
    public Tensor? GateBias { get; private init; }
    public Tensor? UpBias { get; private init; }
    public Tensor? GateUpBias { get; private init; }
    public Tensor? DownBias { get; private init; }
    public ExpertActivation Act { get; private init; }
    public bool Interleaved { get; private init; }
    /// <summary>Non-gated experts down(act(up(x))) (Nemotron-H): the activation, squared after it for relu².</summary>
    public UnaryOp? PlainActivation { get; private init; }
    public bool SquaredActivation { get; private init; }
    public int Count => Down.Count;
    public int Width => Down.In;

    /// <summary>
    /// Per-expert tensors <c>{prefix}.{e}.{gate}.weight</c> etc. (<c>experts.N.gate_proj</c>, or Mixtral's
    /// <c>w1</c>/<c>w3</c>/<c>w2</c> as gate/up/down), recorded as expert weights (topK of E active).
    /// </summary>
    public static ExpertSet LoadPerExpert(WeightSource w, string prefix, int experts, int topK, int hidden, int width,
        ExpertActivation act, bool bias = false, string gate = "gate_proj", string up = "up_proj", string down = "down_proj")
    {
        var use = WeightUse.Expert(topK, experts);
        var g = new Tensor[experts]; var u = new Tensor[experts]; var d = new Tensor[experts];
        for (int e = 0; e < experts; e++)
        {
            g[e] = w.Get($"{prefix}.{e}.{gate}.weight", [width, hidden], use);
            u[e] = w.Get($"{prefix}.{e}.{up}.weight", [width, hidden], use);
            d[e] = w.Get($"{prefix}.{e}.{down}.weight", [hidden, width], use);
        }
        return new ExpertSet
        {
            Gate = ExpertWeights.FromList(g), Up = ExpertWeights.FromList(u), Down = ExpertWeights.FromList(d), Act = act,
            GateBias = bias ? StackBiases(w, prefix, gate, experts, width) : null,
            UpBias = bias ? StackBiases(w, prefix, up, experts, width) : null,
            DownBias = bias ? StackBiases(w, prefix, down, experts, hidden) : null,
        };
    }

    /// <summary>Per-expert non-gated experts <c>{prefix}.{e}.up_proj</c> / <c>down_proj</c>: down(act(up(x))), optionally squared (relu²).</summary>
    public static ExpertSet LoadPerExpertNonGated(WeightSource w, string prefix, int experts, int topK, int hidden, int width,
        UnaryOp act, bool squared, string up = "up_proj", string down = "down_proj")
    {
        var use = WeightUse.Expert(topK, experts);
        var u = new Tensor[experts]; var d = new Tensor[experts];
        for (int e = 0; e < experts; e++)
        {
            u[e] = w.Get($"{prefix}.{e}.{up}.weight", [width, hidden], use);
            d[e] = w.Get($"{prefix}.{e}.{down}.weight", [hidden, width], use);
        }
        return new ExpertSet { Up = ExpertWeights.FromList(u), Down = ExpertWeights.FromList(d), PlainActivation = act, SquaredActivation = squared };
    }

    private static Tensor StackBiases(WeightSource w, string prefix, string proj, int experts, int width) =>
        w.GetStackedF32(Enumerable.Range(0, experts).Select(e => $"{prefix}.{e}.{proj}.bias").ToArray(), width);

    /// <summary>
    /// Experts from stacked tensors already in <c>[E, out, in]</c> layout (views per expert, block scales included):
    /// fused gate_up <c>[E, 2I, C]</c> + down <c>[E, C, I]</c>, biases <c>[E, 2I]</c> / <c>[E, C]</c> optional (F32).
    /// </summary>
    public static ExpertSet FromStacked(Tensor gateUp, Tensor? gateUpBias, Tensor down, Tensor? downBias, ExpertActivation act, bool interleaved) => new()
    {
        GateUp = ExpertWeights.FromStacked(gateUp), GateUpBias = gateUpBias, Down = ExpertWeights.FromStacked(down), DownBias = downBias,
        Act = act, Interleaved = interleaved,
    };

    /// <summary>Stacked separate gate <c>[E, I, C]</c>, up <c>[E, I, C]</c>, down <c>[E, C, I]</c>.</summary>
    public static ExpertSet FromStacked(Tensor gate, Tensor up, Tensor down, ExpertActivation act) => new()
    {
        Gate = ExpertWeights.FromStacked(gate), Up = ExpertWeights.FromStacked(up), Down = ExpertWeights.FromStacked(down), Act = act,
    };

    /// <summary>x <c>[N, 1, C]</c> (or <c>[N, K, C]</c>), ids <c>[N, K]</c> → every chosen expert's output <c>[N, K, C]</c>.</summary>
    public Tensor Forward(IBackend b, Tensor x, Tensor ids)
    {
        if (PlainActivation is UnaryOp act)
        {
            var p = b.Unary(b.MatMulById(x, Up!, ids, UpBias), act);
            return b.MatMulById(SquaredActivation ? b.Unary(p, UnaryOp.Square) : p, Down, ids, DownBias);
        }
        var h = GateUp is not null
            ? b.Glu(b.MatMulById(x, GateUp, ids, GateUpBias), null, Act, Interleaved)
            : b.Glu(b.MatMulById(x, Gate!, ids, GateBias), b.MatMulById(x, Up!, ids, UpBias), Act);
        return b.MatMulById(h, Down, ids, DownBias);
    }
}

/// <summary>
/// A mixture-of-experts feed-forward: router → top-k experts (weighted) + optional shared expert (plain, or scaled by
/// sigmoid(shared_expert_gate(x)) as Qwen3-Next). x <c>[..., C]</c> → <c>[..., C]</c>. Routing and experts stay on the device.
/// </summary>
public sealed class Moe : IModule
{
    public RouterSpec Spec { get; }
    /// <summary>Router weight <c>[E, C]</c> (HF <c>gate.weight</c> / <c>router.weight</c>).</summary>
    public Linear Router { get; }
    /// <summary>e_score_correction_bias <c>[E]</c> (F32) when <see cref="RouterSpec.CorrectionBias"/>.</summary>
    public Tensor? CorrectionBias { get; }
    public ExpertSet Experts { get; }
    public IModule? Shared { get; }
    /// <summary>Linear <c>[1, C]</c>: the shared expert's output is scaled by sigmoid of it (Qwen3-Next).</summary>
    public Linear? SharedGate { get; }
    /// <summary>Width of one routed expert and of the shared expert(s) (for analysis).</summary>
    public int Width { get; init; }
    public int SharedWidth { get; init; }
    public int SharedCount { get; init; }

    public Moe(RouterSpec spec, Linear router, Tensor? correctionBias, ExpertSet experts, IModule? shared = null, Linear? sharedGate = null)
    {
        if (experts.Count != spec.Experts) throw new ArgumentException($"{experts.Count} experts for a router over {spec.Experts}");
        if (router.Out != spec.Experts) throw new CheckpointFormatException($"router '{router.Weight.Name}' has {router.Out} outputs for {spec.Experts} experts");
        if (spec.CorrectionBias && correctionBias is null) throw new ArgumentException("correction bias expected");
        Spec = spec; Router = router; CorrectionBias = correctionBias; Experts = experts; Shared = shared; SharedGate = sharedGate;
    }

    /// <summary>
    /// The routing decision as ops on the device: logits <c>[N, E]</c> → expert ids <c>[N, K]</c> (I32, in descending order
    /// of selection score) and weights <c>[N, K]</c>. Computes what <see cref="MoeRouting.Route"/> computes on the host.
    /// </summary>
    public static (Tensor Ids, Tensor Weights) Route(IBackend b, RouterSpec s, Tensor logits, Tensor? correctionBias)
    {
        int N = logits.Shape[0], E = s.Experts, K = s.TopK;
        var scores = logits;
        if (s.LogitSoftcap > 0) scores = b.Unary(scores, UnaryOp.Softcap, s.LogitSoftcap);
        scores = s.Scoring switch
        {
            RouterScoring.Softmax => b.Softmax(scores),
            RouterScoring.Sigmoid => b.Unary(scores, UnaryOp.Sigmoid),
            RouterScoring.SqrtSoftplus => b.Unary(b.Unary(scores, UnaryOp.Softplus), UnaryOp.Sqrt),
            _ => scores,
        };
        var choice = s.CorrectionBias ? b.Binary(scores, correctionBias!, BinaryOp.Add) : scores;
        if (s.Groups > 1)
        {
            // A group scores the sum of its two best; experts of groups outside the best topk_group are masked to 0.
            int G = s.Groups, per = E / G;
            var grouped = b.View(choice, new Shape(N, G, per));
            var groupScore = b.Reduce(b.TopK(grouped, Math.Min(2, per)).Values, ReduceOp.Sum);     // [N, G, 1]
            var flat = b.View(groupScore, new Shape(N, G));
            var kth = b.Slice(b.TopK(flat, s.TopKGroups).Values, s.TopKGroups - 1, 1);              // [N, 1]
            var keep = b.Binary(flat, kth, BinaryOp.GreaterEqual);                                   // [N, G]
            choice = b.View(b.Binary(grouped, b.View(keep, new Shape(N, G, 1)), BinaryOp.Mul), new Shape(N, E));
        }
        var (_, ids) = b.TopK(choice, K);
        var w = b.TakeAlong(scores, ids);
        if (s.Scoring == RouterScoring.TopKSoftmax) w = b.Softmax(w);
        if (s.NormalizeTopK)
            w = b.Binary(w, b.Unary(b.Reduce(w, ReduceOp.Sum), UnaryOp.Affine, 1f, 1e-20f), BinaryOp.Div);
        if (s.RoutedScaling != 1f) w = b.Unary(w, UnaryOp.Affine, s.RoutedScaling);
        return (ids, w);
    }

    public Tensor Forward(IBackend b, Tensor x)
    {
        int C = x.Shape.Last, N = checked((int)x.Shape.Rows), K = Spec.TopK;
        var x2 = b.View(x, new Shape(N, C));
        if (N == 0) { var z = b.Empty(x.Shape); return z; }
        var (ids, w) = Route(b, Spec, Router.Forward(b, x2), CorrectionBias);
        var w3 = b.View(w, new Shape(N, K, 1));
        var xin = b.View(x2, new Shape(N, 1, C));
        // Llama 4 scales each expert's input by its router score instead of its output.
        if (Spec.ScaleInput) xin = b.Binary(xin, w3, BinaryOp.Mul);
        var y = Experts.Forward(b, xin, ids);                                   // [N, K, C]
        if (!Spec.ScaleInput) y = b.Binary(y, w3, BinaryOp.Mul);
        var sum = b.View(b.Reduce(y, ReduceOp.Sum, axis: 1), new Shape(N, C));
        if (Shared is not null)
        {
            var sh = Shared.Forward(b, x2);
            if (SharedGate is not null) sh = b.Binary(sh, b.Unary(SharedGate.Forward(b, x2), UnaryOp.Sigmoid), BinaryOp.Mul);
            b.BinaryInPlace(sum, sh, BinaryOp.Add);
        }
        return b.View(sum, x.Shape);
    }
}
