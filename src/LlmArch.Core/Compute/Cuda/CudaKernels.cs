using System.Text;
using LlmArch.Native;
using static LlmArch.Native.CudaDriver;

namespace LlmArch.Compute.Cuda;

/// <summary>
/// The kernels of the embedded fatbin (cuda/llmarch.fatbin, built by cuda/build.sh from cuda/src): the module is
/// loaded once per backend and every kernel resolved by its extern "C" name. The driver picks the SASS of this GPU
/// (sm_90) or compiles the embedded compute_80 PTX once for any other GPU from sm_80 on (the driver caches the result).
/// </summary>
internal sealed unsafe class CudaKernels
{
    public const string ResourceName = "llmarch.fatbin";

    public readonly nint Fill, Unary, Binary, Glu, Cast, CopyNd, Gather, TakeAlong, ScatterAdd;
    public readonly nint RmsNorm, LayerNorm, Softmax, TopK, Reduce, ReduceRows, MatchMagnitude, GaussianTopK, AltUpPredict, AltUpCorrect;
    public readonly nint GemvF32, GemvBF16, GemvF16, GemvFp8, GemvQ8, GemvMxfp4, GemvF32M2, GemvBF16M2, GemvF16M2, GemvFp8M2, GemvQ8M2, GemvMxfp4M2, GemvGeneric, GemvColMajor, Gemm, MoeGemv, MoeGemvVec, MoeSort;
    public readonly nint Rope, RowProg, CacheWrite, AttentionD128, AttentionD256, AttentionD576, AttentionCombine, FlashAttn;
    public readonly nint Conv1d, DeltaRule;
    public readonly nint RepPenalty, ArgMaxPartial, ArgMaxFinish, Sample, MarkSeen;

    /// <summary>The fatbin bytes embedded in this assembly.</summary>
    public static byte[] Image()
    {
        using var s = typeof(CudaKernels).Assembly.GetManifestResourceStream(ResourceName)
            ?? throw new InvalidOperationException($"this build of LlmArch has no embedded {ResourceName} (run cuda/build.sh)");
        var bytes = new byte[s.Length];
        s.ReadExactly(bytes);
        return bytes;
    }

    public CudaKernels(CudaBackend b)
    {
        b.Bind();
        var image = Image();
        nint loaded;
        fixed (byte* p = image) Check(cuModuleLoadData(&loaded, p), "cuModuleLoadData (the embedded fatbin)");
        nint module = loaded;
        nint F(string name)
        {
            nint fn;
            var bytes = Encoding.ASCII.GetBytes(name + "\0");
            fixed (byte* n = bytes) Check(cuModuleGetFunction(&fn, module, n), $"cuModuleGetFunction({name})");
            return fn;
        }
        Fill = F("k_fill"); Unary = F("k_unary"); Binary = F("k_binary"); Glu = F("k_glu"); Cast = F("k_cast"); CopyNd = F("k_copy_nd");
        Gather = F("k_gather"); TakeAlong = F("k_take_along"); ScatterAdd = F("k_scatter_add");
        RmsNorm = F("k_rmsnorm"); LayerNorm = F("k_layernorm"); Softmax = F("k_softmax"); TopK = F("k_topk"); Reduce = F("k_reduce");
        ReduceRows = F("k_reduce_rows"); MatchMagnitude = F("k_match_magnitude"); GaussianTopK = F("k_gaussian_topk");
        AltUpPredict = F("k_altup_predict"); AltUpCorrect = F("k_altup_correct");
        GemvF32 = F("k_gemv_f32"); GemvBF16 = F("k_gemv_bf16"); GemvF16 = F("k_gemv_f16"); GemvFp8 = F("k_gemv_fp8"); GemvQ8 = F("k_gemv_q8");
        GemvMxfp4 = F("k_gemv_mxfp4");
        GemvF32M2 = F("k_gemv_f32_m2"); GemvBF16M2 = F("k_gemv_bf16_m2"); GemvF16M2 = F("k_gemv_f16_m2"); GemvFp8M2 = F("k_gemv_fp8_m2");
        GemvQ8M2 = F("k_gemv_q8_m2"); GemvMxfp4M2 = F("k_gemv_mxfp4_m2"); GemvGeneric = F("k_gemv_generic"); GemvColMajor = F("k_gemv_colmajor"); Gemm = F("k_gemm");
        MoeGemv = F("k_moe_gemv"); MoeGemvVec = F("k_moe_gemv_vec"); MoeSort = F("k_moe_sort");
        Rope = F("k_rope"); RowProg = F("k_rowprog"); CacheWrite = F("k_cache_write"); AttentionD128 = F("k_attention_d128"); AttentionD256 = F("k_attention_d256");
        AttentionD576 = F("k_attention_d576"); AttentionCombine = F("k_attention_combine"); FlashAttn = F("k_flash_attn");
        Conv1d = F("k_conv1d"); DeltaRule = F("k_delta_rule");
        RepPenalty = F("k_rep_penalty"); ArgMaxPartial = F("k_argmax_partial"); ArgMaxFinish = F("k_argmax_finish"); Sample = F("k_sample"); MarkSeen = F("k_mark_seen");
    }
}
