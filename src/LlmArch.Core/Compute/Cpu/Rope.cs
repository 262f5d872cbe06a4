using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LlmArch.Compute.Cpu;

/// <summary>
/// Rotary embedding applied in place to x <c>[N, H, D]</c>, token n at position pos[n], on the first
/// <c>rotaryDim</c> channels. Half-split pairs (i, i + rotaryDim/2) as in HF <c>rotate_half</c>, or interleaved
/// pairs (2i, 2i + 1). cos/sin come from a table <c>[positions, rotaryDim/2]</c> built by the RoPE block.
/// The half-split form is vectorized (both halves are contiguous); the <see cref="Isa.Scalar"/> path is the reference.
/// </summary>
public static unsafe class RopeKernel
{
    public static void Apply(float* x, int N, int H, int D, int* pos, float* cos, float* sin, int rotaryDim, bool interleaved) =>
        Apply(x, N, H, D, pos, cos, sin, rotaryDim, interleaved, CpuIsa.Current);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Apply(float* x, int N, int H, int D, int* pos, float* cos, float* sin, int rotaryDim, bool interleaved, Isa isa)
    {
        int half = rotaryDim / 2;
        for (int n = 0; n < N; n++)
        {
            float* c = cos + (long)pos[n] * half, s = sin + (long)pos[n] * half;
            for (int h = 0; h < H; h++)
            {
                float* v = x + ((long)n * H + h) * D;
                if (interleaved)
                    for (int i = 0; i < half; i++)
                    {
                        float a = v[2 * i], bb = v[2 * i + 1];
                        v[2 * i] = a * c[i] - bb * s[i];
                        v[2 * i + 1] = bb * c[i] + a * s[i];
                    }
                else
                {
                    int i = 0;
                    if (isa == Isa.Avx512)
                        for (; i + 16 <= half; i += 16)
                        {
                            var a = Vector512.Load(v + i); var bb = Vector512.Load(v + i + half);
                            var vc = Vector512.Load(c + i); var vs = Vector512.Load(s + i);
                            (a * vc - bb * vs).Store(v + i);
                            (bb * vc + a * vs).Store(v + i + half);
                        }
                    else if (isa >= Isa.Avx2)
                        for (; i + 8 <= half; i += 8)
                        {
                            var a = Vector256.Load(v + i); var bb = Vector256.Load(v + i + half);
                            var vc = Vector256.Load(c + i); var vs = Vector256.Load(s + i);
                            (a * vc - bb * vs).Store(v + i);
                            (bb * vc + a * vs).Store(v + i + half);
                        }
                    for (; i < half; i++)
                    {
                        float a = v[i], bb = v[i + half];
                        v[i] = a * c[i] - bb * s[i];
                        v[i + half] = bb * c[i] + a * s[i];
                    }
                }
            }
        }
    }
}
