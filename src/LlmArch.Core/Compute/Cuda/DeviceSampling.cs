using LlmArch.Native;
using static LlmArch.Native.CudaDriver;

namespace LlmArch.Compute
{
    /// <summary>Sampling settings for <see cref="IFusedSampling"/> (the host sampler's options as plain values; temperature 0 = greedy).</summary>
    public sealed record DeviceSamplingOptions
    {
        public float Temperature { get; init; }
        public int TopK { get; init; }
        public float TopP { get; init; } = 1f;
        public float MinP { get; init; }
        public float RepetitionPenalty { get; init; } = 1f;
        public ulong Seed { get; init; }
        public static DeviceSamplingOptions Greedy { get; } = new();
    }

    /// <summary>
    /// A fused form generation code may use: the next token of each row of device logits chosen on the device (greedy,
    /// temperature, top-k, top-p, min-p, repetition penalty, seeded), so only the ids cross to the host. Greedy equals
    /// the host's argmax (first index of the maximum); a seeded draw is reproducible but uses its own generator.
    /// </summary>
    public interface IFusedSampling
    {
        DeviceSampler CreateSampler(int rows, int vocab, DeviceSamplingOptions options);
    }

    /// <summary>Per-batch sampling state on the device (the seen-token masks of the repetition penalty, a step counter).</summary>
    public abstract class DeviceSampler : IDisposable
    {
        /// <summary>Marks tokens (the prompt) as seen by row <paramref name="row"/>, for the repetition penalty.</summary>
        public abstract void Observe(int row, ReadOnlySpan<int> tokens);
        /// <summary>One token per row of <paramref name="logits"/> <c>[rows, V]</c> into <paramref name="ids"/>; the penalty is applied to the logits in place.</summary>
        public abstract void Sample(Tensor logits, Span<int> ids);
        public abstract void Dispose();
    }
}

namespace LlmArch.Compute.Cuda
{
    public sealed unsafe partial class CudaBackend : IFusedSampling
    {
        public DeviceSampler CreateSampler(int rows, int vocab, DeviceSamplingOptions options) => new CudaSampler(this, rows, vocab, options);

        private sealed class CudaSampler : DeviceSampler
        {
            private readonly CudaBackend _b;
            private readonly int _rows, _vocab;
            private readonly DeviceSamplingOptions _o;
            private readonly Tensor _ids, _best;
            private readonly Tensor? _seen;
            private readonly PinnedBuffer _host;
            private ulong _step;

            public CudaSampler(CudaBackend b, int rows, int vocab, DeviceSamplingOptions o)
            {
                if (rows <= 0 || vocab <= 0) throw new ArgumentException($"sampler of {rows} rows over {vocab} tokens");
                if (o.Temperature < 0 || float.IsNaN(o.Temperature)) throw new LlmArchInputException($"temperature must be >= 0 (got {o.Temperature})");
                if (!(o.TopP > 0 && o.TopP <= 1)) throw new LlmArchInputException($"top-p must be in (0, 1] (got {o.TopP})");
                if (!(o.RepetitionPenalty > 0)) throw new LlmArchInputException($"repetition penalty must be > 0 (got {o.RepetitionPenalty})");
                _b = b; _rows = rows; _vocab = vocab; _o = o;
                _ids = b.Allocate(DType.I32, new Shape(rows), "sampler.ids");
                _best = b.Allocate(DType.I64, new Shape(rows), "sampler.best");
                if (o.RepetitionPenalty != 1f) _seen = b.Allocate(DType.U8, new Shape(rows, vocab), "sampler.seen");
                _host = new PinnedBuffer(Math.Max(rows * 4, 64));
            }

            public override void Observe(int row, ReadOnlySpan<int> tokens)
            {
                if (_seen is null || tokens.Length == 0) return;
                if ((uint)row >= (uint)_rows) throw new ArgumentOutOfRangeException(nameof(row));
                var rowsIds = new int[tokens.Length * 2];
                for (int i = 0; i < tokens.Length; i++) { rowsIds[i] = row; rowsIds[tokens.Length + i] = tokens[i]; }
                var t = _b.Allocate(DType.I32, new Shape(rowsIds.Length), "sampler.observe");
                _b.Upload<int>(rowsIds, t);
                nint ps = _seen.Ptr, pr = t.Ptr, pi = t.Ptr + tokens.Length * 4;
                int n = tokens.Length, V = _vocab;
                void** args = stackalloc void*[] { &ps, &pr, &pi, &n, &V };
                _b.Launch(_b._k.MarkSeen, Blocks(n), 1, 1, 256, 0, args, "k_mark_seen");
                _b.Free(t);
            }

            public override void Sample(Tensor logits, Span<int> ids)
            {
                if (logits.DType != DType.F32 || logits.Count != (long)_rows * _vocab) throw new ArgumentException($"logits {logits.DType}{logits.Shape} for {_rows} rows of {_vocab}");
                if (ids.Length < _rows) throw new ArgumentException($"{ids.Length} ids for {_rows} rows");
                _b.Begin();
                int V = _vocab;
                nint pl = logits.Ptr, pseen = _seen?.Ptr ?? 0, pout = _ids.Ptr;
                if (_seen is not null)
                {
                    float pen = _o.RepetitionPenalty;
                    void** pa = stackalloc void*[] { &pl, &pseen, &V, &pen };
                    _b.Launch(_b._k.RepPenalty, (uint)Math.Min((V + 255) / 256, 1024), (uint)_rows, 1, 256, 0, pa, "k_rep_penalty");
                }
                if (_o.Temperature == 0f)
                {
                    nint pb = _best.Ptr;
                    int rows = _rows;
                    Check(cuMemsetD8Async((ulong)pb, 0, (nuint)(rows * 8), _b.Stream), "cuMemsetD8Async");
                    void** aa = stackalloc void*[] { &pl, &V, &pb };
                    _b.Launch(_b._k.ArgMaxPartial, (uint)Math.Clamp((V + 2047) / 2048, 1, 64), (uint)rows, 1, 256, 0, aa, "k_argmax_partial");
                    void** fa = stackalloc void*[] { &pb, &rows, &V, &pout, &pseen };
                    _b.Launch(_b._k.ArgMaxFinish, (uint)((rows + 255) / 256), 1, 1, 256, 0, fa, "k_argmax_finish");
                }
                else
                {
                    var s = new SampleArgs
                    {
                        Logits = (ulong)pl, Out = (ulong)pout, Seen = (ulong)pseen, Seed = _o.Seed, Step = _step,
                        InvTemperature = 1f / _o.Temperature, TopP = _o.TopP, MinP = _o.MinP, TopK = _o.TopK, V = V,
                    };
                    void* ps = &s;
                    _b.Launch(_b._k.Sample, (uint)_rows, 1, 1, 1024, 0, &ps, "k_sample");
                }
                _step++;
                Check(cuMemcpyDtoHAsync(_host.Ptr, (ulong)pout, (nuint)(_rows * 4), _b.Stream), "cuMemcpyDtoHAsync");
                Check(cuStreamSynchronize(_b.Stream), "sampling");
                new ReadOnlySpan<int>(_host.Ptr, _rows).CopyTo(ids);
            }

            public override void Dispose()
            {
                _b.Free(_ids);
                _b.Free(_best);
                if (_seen is not null) _b.Free(_seen);
                _host.Dispose();
            }
        }
    }
}
