using System.Globalization;
using LlmArch.Checkpoints;
using LlmArch.Cli.Output;
using LlmArch.Compute.Cpu;
using LlmArch.Generation;
using LlmArch.Models;
using LlmArch.Tokenization;

namespace LlmArch.Cli;

/// <summary>What the generating verbs share: loading a model (on its own thread pool, with a progress display) and stop ids.</summary>
public static class Loading
{
    /// <summary>A loaded model and the thread pool it runs on (disposed with it when <c>--threads</c> made one).</summary>
    public sealed class LoadedModel(CausalLM model, CpuThreadPool? pool) : IDisposable
    {
        public CausalLM Model => model;
        public void Dispose()
        {
            (model.Weights as IDisposable)?.Dispose();
            pool?.Dispose();
        }
    }

    public static LoadedModel Load(Invocation inv, string dir, DeviceGroup device, LoadOptions? options = null)
    {
        var pool = inv.Get(device.Threads) is int t ? new CpuThreadPool(t) : null;
        try
        {
            var backend = device.Resolve(inv, pool);
            using (Progress.Start(inv, $"loading {Path.GetFileName(Path.TrimEndingDirectorySeparator(dir))}"))
                return new LoadedModel(ModelLoader.Load(dir, backend, options), pool);
        }
        catch
        {
            pool?.Dispose();
            throw;
        }
    }

    /// <summary>Stop ids: generation_config.json's eos, else config.json's, plus the tokenizer's eos token.</summary>
    public static HashSet<int> StopIds(CausalLM model, GenerationConfig? gen, Tokenizer? tok)
    {
        var eos = new HashSet<int>(gen?.EosTokenId ?? model.Config.EosTokenId ?? []);
        if (tok?.EosTokenId is int e) eos.Add(e);
        return eos;
    }

    /// <summary>The stats line: rates only where there were tokens (no "tok/s" for zero tokens).</summary>
    public static string StatsLine(GenerationStats s)
    {
        var inv = CultureInfo.InvariantCulture;
        string prefill = s.PromptTokens == 0 || s.PrefillSeconds <= 0 ? $"prefill: {s.PromptTokens} tokens" : string.Create(inv, $"prefill: {s.PromptTokens} tokens, {s.PrefillTokensPerSecond:F1} tok/s");
        string decode = s.GeneratedTokens <= 1 || s.DecodeSeconds <= 0 ? $"decode: {s.GeneratedTokens} tokens" : string.Create(inv, $"decode: {s.GeneratedTokens} tokens, {s.DecodeTokensPerSecond:F1} tok/s");
        return $"{prefill}; {decode}";
    }

    /// <summary>The number of new tokens that fit: <paramref name="maxNew"/>, or fewer when the context ends first (with a notice).</summary>
    public static int FitToContext(Invocation inv, CausalLM model, int promptTokens, int maxNew)
    {
        int room = model.MaxPositions - promptTokens;
        if (room >= maxNew || room < 0) return maxNew; // a prompt that does not fit at all is the generator's error
        inv.Note($"notice: generation stops after {room} tokens, at max_position_embeddings {model.MaxPositions} ({promptTokens} prompt tokens + {maxNew} requested)");
        return room;
    }
}
