namespace LlmArch.Compute;

/// <summary>Rounding of a float to the nearest bfloat16 (round to nearest even), as a float.</summary>
public static class BFloat16Rounding
{
    public static float Round(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if (float.IsNaN(f)) return f;
        u += 0x7FFF + ((u >> 16) & 1);
        return BitConverter.UInt32BitsToSingle(u & 0xFFFF0000u);
    }
}
