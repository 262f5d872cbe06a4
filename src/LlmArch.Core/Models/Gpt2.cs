using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// GPT-2 (<c>model_type</c> "gpt2"), the baseline: learned absolute positions, pre-norm LayerNorm, MHA from one
/// fused <c>c_attn</c>, GELU (tanh) MLP, tied embeddings. Its Conv1D weights are stored <c>[in, out]</c>; the remap
/// transposes them once at load into <c>[out, in]</c> and splits c_attn into q, k, v.
/// </summary>
[ModelType("gpt2", "GPT2LMHeadModel")]
public sealed class Gpt2 : CausalLM
{
    private readonly int _hidden, _heads, _vocab, _positions, _layers;
    private readonly Tensor _wte, _wpe, _lmHead;
    private readonly DecoderLayer[] _stack;
    private readonly LayerNorm _lnF;

    public override int VocabSize => _vocab;
    public override int MaxPositions => _positions;
    public override ArchitectureInfo Info { get; }

    public Gpt2(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        _hidden = c.RequirePositive(c.NEmbd ?? c.HiddenSize, "n_embd");
        _heads = c.RequirePositive(c.NHead ?? c.NumAttentionHeads, "n_head");
        _layers = c.RequirePositive(c.NLayer ?? c.NumHiddenLayers, "n_layer");
        _vocab = c.RequirePositive(c.VocabSize, "vocab_size");
        _positions = c.RequirePositive(c.NPositions ?? c.MaxPositionEmbeddings, "n_positions");
        if (_hidden % _heads != 0) throw c.Invalid("n_head", $"{_heads} does not divide n_embd {_hidden}");
        int inner = c.NInner ?? 4 * _hidden, headDim = _hidden / _heads;
        float eps = (float)(c.LayerNormEpsilon ?? 1e-5);
        var act = Activations.Parse(c, c.ActivationFunction ?? "gelu_new", "activation_function");
        // Real checkpoints come with or without the "transformer." prefix.
        string p = w.HasData && !w.Contains("transformer.wte.weight") ? "" : "transformer.";
        _wte = w.Get($"{p}wte.weight", [_vocab, _hidden], WeightUse.Embed);
        _wpe = w.Get($"{p}wpe.weight", [_positions, _hidden], WeightUse.Embed);
        _stack = new DecoderLayer[_layers];
        for (int i = 0; i < _layers; i++)
        {
            string h = $"{p}h.{i}";
            var cAttn = w.GetHost($"{h}.attn.c_attn.weight", [_hidden, 3 * _hidden]);
            var cAttnB = w.GetHost($"{h}.attn.c_attn.bias", [3 * _hidden]);
            Linear Part(int k) => new(w.Place(WeightTransforms.TransposeRows(cAttn, k * _hidden, _hidden)), w.Place(WeightTransforms.SliceF32(cAttnB, k * _hidden, _hidden)));
            Linear Conv(string name, int inF, int outF) =>
                new(w.Place(WeightTransforms.TransposeRows(w.GetHost($"{name}.weight", [inF, outF]), 0, outF)), w.GetF32($"{name}.bias", outF));
            float scale = (c.ScaleAttnWeights ?? true ? 1f / MathF.Sqrt(headDim) : 1f) / (c.ScaleAttnByInverseLayerIdx == true ? i + 1 : 1);
            var spec = new AttentionSpec { Hidden = _hidden, Heads = _heads, KvHeads = _heads, HeadDim = headDim, Scale = scale };
            _stack[i] = new DecoderLayer
            {
                Placement = NormPlacement.Pre,
                InputNorm = LayerNorm.Load(w, $"{h}.ln_1", _hidden, eps),
                Attention = new SelfAttention(spec, Part(0), Part(1), Part(2), Conv($"{h}.attn.c_proj", _hidden, _hidden)),
                PreFeedForwardNorm = LayerNorm.Load(w, $"{h}.ln_2", _hidden, eps),
                FeedForward = new PlainMlp(Conv($"{h}.mlp.c_fc", _hidden, inner), Conv($"{h}.mlp.c_proj", inner, _hidden), act),
            };
        }
        _lnF = LayerNorm.Load(w, $"{p}ln_f", _hidden, eps);
        _lmHead = c.TieWordEmbeddings ?? true ? _wte : w.Get("lm_head.weight", _vocab, _hidden);
        Info = new ArchitectureInfo
        {
            Layers = _stack.Select(l => LayerInfo.FromAttention(l.Attention.Spec) with { Rope = false, FfnWidth = inner }).ToList(),
            Norm = "pre-norm LayerNorm", Positions = "learned absolute",
        };
    }

    public override int HiddenSize => _hidden;

    public override ModelCache CreateCache(int slots, int maxTokens)
    {
        var cache = new ModelCache(Backend, _layers, slots, maxTokens);
        for (int i = 0; i < _layers; i++) cache.Kv[i] = _stack[i].Attention.CreateCache(Backend, slots, maxTokens);
        return cache;
    }

    protected override Tensor HiddenStates(StepBatch batch, ModelCache cache)
    {
        var b = Backend;
        var x = b.Gather(_wte, batch.Ids!);
        b.BinaryInPlace(x, b.Gather(_wpe, batch.Positions!), BinaryOp.Add);
        for (int i = 0; i < _layers; i++) x = _stack[i].Forward(b, x, cache.Kv[i], batch);
        return _lnF.Forward(b, x);
    }

    protected override Tensor Head(Tensor hidden) => Backend.MatMul(hidden, _lmHead);
}
