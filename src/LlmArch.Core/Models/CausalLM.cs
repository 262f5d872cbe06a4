using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>What kind of token mixer a layer has.</summary>
public enum MixerKind
{
    Full, Sliding, Chunked, Mla, Linear,
    /// <summary>Gated short convolution (LFM2): a constant conv state.</summary>
    Conv,
    /// <summary>State-space recurrence (Mamba2): a constant conv + SSM state.</summary>
    Ssm,
    /// <summary>MLA with DeepSeek Sparse Attention: an indexer picks <see cref="LayerInfo.SparseTopK"/> cached keys per query.</summary>
    SparseMla,
    /// <summary>DeepSeek-V4 compressed sparse attention: a sliding window plus top-k of compressed entries.</summary>
    CompressedSparse,
    /// <summary>DeepSeek-V4 heavily compressed attention: a sliding window plus every compressed entry.</summary>
    HeavilyCompressed,
    /// <summary>No token mixer: a feed-forward-only block (Nemotron-H's MLP and MoE blocks).</summary>
    None,
}

/// <summary>What kind of feed-forward a layer has.</summary>
public enum FfnKind
{
    Dense, Moe, DenseAndMoe,
    /// <summary>No feed-forward: a mixer-only block (Nemotron-H's Mamba2 and attention blocks).</summary>
    None,
}

/// <summary>
/// One layer as analysis sees it: enough to compute KV-cache bytes and attention FLOPs without a second copy of
/// the architecture. Cache sizes are in values (multiply by the cache dtype's bytes).
/// </summary>
public sealed record LayerInfo
{
    public MixerKind Mixer { get; init; }
    public int Heads { get; init; }
    public int KvHeads { get; init; }
    public int HeadDim { get; init; }
    public int ValueDim { get; init; }
    /// <summary>Sliding window or chunk size; 0 = unbounded.</summary>
    public int Window { get; init; }
    public bool Rope { get; init; } = true;
    /// <summary>Values cached per token (KvHeads * (HeadDim + ValueDim) for attention; MLA's latent + rope key).</summary>
    public long KvValuesPerToken { get; init; }
    /// <summary>Values of constant-size state (linear attention's conv + recurrent state).</summary>
    public long StateValues { get; init; }
    /// <summary>This layer reads another layer's KV cache and stores none (Gemma 3n KV sharing).</summary>
    public int? SharesKvOf { get; init; }
    /// <summary>The layer also keeps one compressed entry per this many tokens (DeepSeek-V4 CSA/HCA); 0 = none.</summary>
    public int CompressRate { get; init; }
    /// <summary>Values cached per compressed entry (the entry, plus the indexer's key where there is one).</summary>
    public long CompressedValuesPerEntry { get; init; }
    /// <summary>Sparse attention: each query reads at most this many of the indexed keys (DSA, CSA); 0 = all.</summary>
    public int SparseTopK { get; init; }
    /// <summary>Multiply-adds the lightning indexer spends per scored key (index heads × index head dim); 0 = no indexer.</summary>
    public long IndexerMacsPerKey { get; init; }
    public FfnKind Ffn { get; init; }
    public int Experts { get; init; }
    public int ActiveExperts { get; init; }
    public int SharedExperts { get; init; }
    public int FfnWidth { get; init; }

    public static LayerInfo FromAttention(AttentionSpec s, MixerKind? kind = null) => new()
    {
        Mixer = kind ?? (s.Window > 0 ? MixerKind.Sliding : s.Chunk > 0 ? MixerKind.Chunked : MixerKind.Full),
        Heads = s.Heads, KvHeads = s.KvHeads, HeadDim = s.HeadDim, ValueDim = s.VDim,
        Window = s.Window > 0 ? s.Window : s.Chunk, Rope = s.Rope is not null,
        KvValuesPerToken = (long)s.KvHeads * (s.HeadDim + s.VDim),
    };
}

/// <summary>Architecture-level description shown by <c>info</c> and <c>compare</c>.</summary>
public sealed record ArchitectureInfo
{
    public required IReadOnlyList<LayerInfo> Layers { get; init; }
    public string Norm { get; init; } = "pre-norm RMSNorm";
    public string QkNorm { get; init; } = "none";
    public string Positions { get; init; } = "RoPE";
    public string Notes { get; init; } = "";
}

/// <summary>
/// A causal language model built from a config and a weight source, running on one backend. <see cref="Forward(StepBatch, ModelCache, bool)"/>
/// runs one step over a ragged batch of sequences (each in its cache slot, prompt chunks and decode tokens mixed) and
/// returns logits <c>[N, V]</c> (or <c>[S, V]</c>, one row per sequence, with lastOnly). The returned tensor lives in
/// the backend's scratch and is valid until the next forward. One step runs at a time per model (a lock); the
/// generation engine batches concurrent requests into shared steps.
/// </summary>
public abstract class CausalLM
{
    private readonly object _step = new();
    private readonly StepBatch _uniform = new();

    public ModelConfig Config { get; }
    public WeightSource Weights { get; }
    public IBackend Backend { get; }
    /// <summary>Held while a step runs: code that reads a step's scratch after Forward returns (draft heads, samplers) holds it too.</summary>
    public object StepLock => _step;
    public abstract ArchitectureInfo Info { get; }
    public abstract int VocabSize { get; }
    /// <summary>Longest sequence the model supports (max_position_embeddings).</summary>
    public abstract int MaxPositions { get; }
    /// <summary>Width of the final hidden state (what a draft head reads).</summary>
    public abstract int HiddenSize { get; }
    public int NumLayers => Info.Layers.Count;

    protected CausalLM(ModelConfig config, WeightSource weights, IBackend backend)
    {
        Config = config; Weights = weights; Backend = backend;
    }

    /// <summary>A cache of <paramref name="slots"/> sequences of up to <paramref name="maxTokens"/> tokens each, on the model's backend.</summary>
    public abstract ModelCache CreateCache(int slots, int maxTokens);

    /// <summary>The final hidden states <c>[N, C]</c> (after the final norm) of a prepared step.</summary>
    protected abstract Tensor HiddenStates(StepBatch batch, ModelCache cache);

    /// <summary>Logits of hidden states <c>[R, C]</c>: the LM head and what the family applies after it (softcaps, multipliers).</summary>
    protected abstract Tensor Head(Tensor hidden);

    /// <summary>One step over a ragged batch: logits <c>[N, V]</c>, or <c>[S, V]</c> (each sequence's last token) with lastOnly.</summary>
    public Tensor Forward(StepBatch batch, ModelCache cache, bool lastOnly = false) => Forward(batch, cache, lastOnly, out _);

    /// <summary>As <see cref="Forward(StepBatch, ModelCache, bool)"/>, also returning the final hidden states <c>[N, C]</c> (draft heads read them).</summary>
    public Tensor Forward(StepBatch batch, ModelCache cache, bool lastOnly, out Tensor hidden)
    {
        lock (_step)
        {
            Validate(batch, cache);
            Backend.ResetScratch();
            Backend.Prepare(batch);
            // A backend with step graphs (CUDA) replays a recorded step of this shape instead of running the ops again.
            var graphs = StepGraphsAllowed ? Backend as IStepGraphs : null;
            if (graphs is null || !graphs.TryReplay(batch, cache, lastOnly, out var logits, out hidden))
            {
                graphs?.BeginStep(batch, cache, lastOnly);
                try
                {
                    hidden = HiddenStates(batch, cache);
                    var h = lastOnly && batch.MaxCount > 1 ? Backend.Gather(hidden, batch.LastRows!) : hidden;
                    logits = Head(h);
                }
                catch { graphs?.EndStep(null, null); throw; }
                graphs?.EndStep(logits, hidden);
            }
            for (int s = 0; s < batch.Sequences; s++) cache.Advance(batch.Slot[s], batch.Count[s]);
            return logits;
        }
    }

    /// <summary>
    /// False when the model's blocks make host-side decisions from token positions (not only from the step's shape and
    /// slots), so a recorded step could not be replayed for a later position.
    /// </summary>
    protected virtual bool StepGraphsAllowed => true;

    /// <summary>Whether a backend may capture this model's decode steps as graphs (false for models whose blocks decide
    /// on the host from positions: DSA, compressed attention).</summary>
    public bool UsesStepGraphs => StepGraphsAllowed;

    private void Validate(StepBatch batch, ModelCache cache)
    {
        if (!ReferenceEquals(cache.Backend, Backend)) throw new ArgumentException("the cache belongs to another backend");
        if (batch.Sequences == 0) throw new ArgumentException("an empty step");
        int V = VocabSize;
        for (int s = 0; s < batch.Sequences; s++)
        {
            int slot = batch.Slot[s], start = batch.Start[s], end = start + batch.Count[s];
            if ((uint)slot >= (uint)cache.Slots) throw new ArgumentException($"slot {slot} outside the cache's {cache.Slots} slots");
            for (int t = 0; t < s; t++)
                if (batch.Slot[t] == slot) throw new ArgumentException($"slot {slot} appears twice in one step");
            if (start != cache.Length(slot)) throw new ArgumentException($"sequence in slot {slot} continues at {start} but the cache holds {cache.Length(slot)} tokens");
            if (end > MaxPositions)
                throw new LlmArchInputException($"sequence of {end} tokens exceeds max_position_embeddings {MaxPositions} of {Config.SourcePath}");
            if (end > cache.Capacity)
                throw new LlmArchInputException($"sequence of {end} tokens exceeds the {cache.Capacity} tokens this cache was allocated for");
        }
        foreach (int id in batch.TokenIds)
            if ((uint)id >= (uint)V) throw new LlmArchInputException($"token id {id} is outside the vocabulary of {V}");
    }

    /// <summary>
    /// A step over <paramref name="batch"/> sequences of equal length in slots 0..batch-1, each continuing where the cache
    /// left it: logits <c>[B, T, V]</c> (or <c>[B, 1, V]</c> with lastOnly).
    /// </summary>
    public Tensor Forward(ReadOnlySpan<int> ids, int batch, ModelCache cache, bool lastOnly = false)
    {
        if (batch <= 0 || ids.Length % batch != 0) throw new ArgumentException($"{ids.Length} ids do not split into {batch} sequences");
        if (batch > cache.Slots) throw new ArgumentException($"cache has {cache.Slots} slots, not {batch}");
        int T = ids.Length / batch, V = VocabSize;
        if (T == 0) return Backend.Empty(new Shape(batch, 0, V));
        lock (_step)
        {
            _uniform.Clear();
            for (int b = 0; b < batch; b++) _uniform.Add(b, cache.Length(b), ids.Slice(b * T, T));
            var logits = Forward(_uniform, cache, lastOnly);
            return Backend.View(logits, new Shape(batch, lastOnly ? 1 : T, V));
        }
    }
}

/// <summary>Marks a model class with the HF <c>model_type</c>s and <c>architectures</c> it implements.</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class ModelTypeAttribute(params string[] names) : Attribute
{
    public string[] Names { get; } = names;
}
