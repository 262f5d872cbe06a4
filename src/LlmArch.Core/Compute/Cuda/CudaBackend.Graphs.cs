using LlmArch.Native;
using static LlmArch.Native.CudaDriver;

namespace LlmArch.Compute.Cuda;

// Decode steps as CUDA graphs. A step shape (sequences, all counts 1, lastOnly, context bucket, all-from-start) runs
// eagerly the first time (the scratch arena grows to its size, expert tables and RoPE tables get built), is captured
// the second time (then launched, which computes that step) and replayed from then on. A replay is valid for the
// cache it was captured with and as long as no device memory was freed since (freed addresses may be reused).
// Anything a captured step cannot repeat (a host upload, an allocation, a free) makes its graph single-use: it is
// launched once, discarded, and the shape runs eagerly from then on.
public sealed unsafe partial class CudaBackend : IStepGraphs
{
    private sealed class GraphEntry
    {
        public nint Exec;
        public required WeakReference<object> Cache;
        public long Epoch;
        public required Tensor Logits;
        public required Tensor Hidden;
        public long Order;
    }

    /// <summary>A decode step's shape (sequences, lastOnly, context bucket, all-from-start) and its slot assignment
    /// (compositions may view per-slot state by host slot).</summary>
    private readonly record struct GraphKey(long Shape, ulong Slots);

    private readonly Dictionary<GraphKey, GraphEntry> _graphs = new();
    private readonly HashSet<GraphKey> _seen = new(), _uncapturable = new();
    private bool _capturing, _captureAborted;
    private string? _abortReason;
    private GraphKey _captureKey;
    private long _epoch, _order;
    private object? _captureCache;
    private const int MaxGraphs = 64;

    /// <summary>Replays, captures and eager decode steps so far (diagnostics for tests and the bench).</summary>
    public (long Replays, long Captures, long Uncapturable) GraphStats => (_replays, _captures, _uncapturable.Count);
    private long _replays, _captures;

    private GraphKey? StepKey(StepBatch batch, bool lastOnly)
    {
        if (!Options.Graphs || batch.MaxCount != 1 || batch.Sequences > 4096) return null;
        int log2 = System.Numerics.BitOperations.Log2((uint)Bucket);
        ulong h = 1469598103934665603UL;
        foreach (int s in batch.Slot) h = (h ^ (uint)s) * 1099511628211UL;
        return new GraphKey((long)batch.Sequences | (lastOnly ? 1L << 13 : 0L) | ((long)log2 << 14) | (batch.AllFromStart ? 1L << 20 : 0L), h);
    }

    public bool TryReplay(StepBatch batch, object cache, bool lastOnly, out Tensor logits, out Tensor hidden)
    {
        logits = hidden = null!;
        if (StepKey(batch, lastOnly) is not GraphKey key || !_graphs.TryGetValue(key, out var e)) return false;
        if (e.Epoch != _epoch || !e.Cache.TryGetTarget(out var c) || !ReferenceEquals(c, cache))
        {
            Check(cuGraphExecDestroy(e.Exec), "cuGraphExecDestroy");
            _graphs.Remove(key);
            return false;
        }
        Bind();
        Flush();
        Check(cuGraphLaunch(e.Exec, Stream), "cuGraphLaunch");
        if (_syncDebug) Check(cuStreamSynchronize(Stream), "graph replay");
        _replays++;
        logits = e.Logits; hidden = e.Hidden;
        return true;
    }

    public void BeginStep(StepBatch batch, object cache, bool lastOnly)
    {
        if (StepKey(batch, lastOnly) is not GraphKey key || _uncapturable.Contains(key)) return;
        if (_seen.Add(key)) return; // first time: eager (sizes the arena, builds lazy tables)
        Bind();
        Flush();
        Check(cuStreamBeginCapture(Stream, CaptureModeRelaxed), "cuStreamBeginCapture");
        _capturing = true; _captureAborted = false; _abortReason = null; _captureKey = key; _captureCache = cache;
    }

    /// <summary>Something inside the captured step cannot be repeated by a replay: launch the graph once, then drop it.</summary>
    internal void AbortCapture(string reason)
    {
        if (!_capturing) return;
        _captureAborted = true;
        _abortReason ??= reason;
    }

    public void EndStep(Tensor? logits, Tensor? hidden)
    {
        if (!_capturing) return;
        Flush();
        _capturing = false;
        nint graph;
        int r = cuStreamEndCapture(Stream, &graph);
        var key = _captureKey;
        var cache = _captureCache!;
        _captureCache = null;
        if (r != 0)
        {
            _uncapturable.Add(key);
            if (logits is null) return; // the model code threw; its exception is on its way
            throw new CudaException($"capturing a decode step as a CUDA graph failed ({Describe(r)}); run with LLMARCH_CUDA_GRAPHS=0", r);
        }
        nint exec;
        r = cuGraphInstantiateWithFlags(&exec, graph, 0);
        cuGraphDestroy(graph);
        if (r != 0)
        {
            _uncapturable.Add(key);
            if (logits is null) return;
            throw new CudaException($"instantiating a decode step's CUDA graph failed ({Describe(r)}); run with LLMARCH_CUDA_GRAPHS=0", r);
        }
        if (logits is null || hidden is null) { cuGraphExecDestroy(exec); _uncapturable.Add(key); return; }
        // The captured work has not run yet: this launch computes the step.
        Check(cuGraphLaunch(exec, Stream), "cuGraphLaunch");
        _captures++;
        if (_captureAborted)
        {
            Check(cuStreamSynchronize(Stream), "cuStreamSynchronize");
            cuGraphExecDestroy(exec);
            _uncapturable.Add(key);
            return;
        }
        if (_graphs.Count >= MaxGraphs)
        {
            var oldest = _graphs.MinBy(kv => kv.Value.Order);
            cuGraphExecDestroy(oldest.Value.Exec);
            _graphs.Remove(oldest.Key);
        }
        _graphs[key] = new GraphEntry
        {
            Exec = exec, Cache = new WeakReference<object>(cache), Epoch = _epoch, Order = _order++,
            Logits = Detach(logits), Hidden = Detach(hidden),
        };
    }

    /// <summary>A header of its own (scratch headers are reused by later steps).</summary>
    private static Tensor Detach(Tensor t) =>
        new(t.DType, t.Shape, t.Ptr, null, t.Name) { Device = t.Device };

    private void DestroyGraphs()
    {
        foreach (var e in _graphs.Values) cuGraphExecDestroy(e.Exec);
        _graphs.Clear();
    }
}
