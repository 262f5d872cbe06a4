namespace LlmArch.Compute.Cpu;

/// <summary>
/// Rotary embedding applied in place to x <c>[N, H, D]</c>, token n at position pos[n], on the first
/// <c>rotaryDim</c> channels. Half-split pairs (i, i + rotaryDim/2) as in HF <c>rotate_half</c>, or interleaved
/// pairs (2i, 2i + 1). cos/sin come from a table <c>[positions, rotaryDim/2]</c> built by the RoPE block.
/// </summary>
public static unsafe class RopeKernel
{
    public static void Apply(float* x, int N, int H, int D, int* pos, float* cos, float* sin, int rotaryDim, bool interleaved)
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
                    for (int i = 0; i < half; i++)
                    {
                        float a = v[i], bb = v[i + half];
                        v[i] = a * c[i] - bb * s[i];
                        v[i + half] = bb * c[i] + a * s[i];
                    }
            }
        }
    }
}
