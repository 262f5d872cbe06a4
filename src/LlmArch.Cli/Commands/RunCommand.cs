using System.Globalization;
using LlmArch.Checkpoints;
using LlmArch.Generation;
using LlmArch.Models;
using LlmArch.Tokenization;

namespace LlmArch.Cli.Commands;

/// <summary>
/// <c>llmarch run --model &lt;dir&gt; (--prompt "text" | --prompt-ids 1,2,3) [--max-new-tokens N] [sampling flags] [--device cpu|cuda[:N]] [--dtype f32|bf16]
/// [--chat] [--speculative mtp]</c>: generates and streams text (or ids), then reports prefill and decode speed on
/// stderr. Several id prompts: separate them with ';' (a batch).
/// </summary>
public sealed class RunCommand : ICommand
{
    public string Name => "run";
    public string Summary => "generate: run --model <dir> (--prompt \"text\" [--chat] | --prompt-ids 1,2,3) [--max-new-tokens N] [--temperature T --top-k K --top-p P --min-p M --repetition-penalty R --seed S] [--speculative mtp] [--device cpu|cuda[:N]] [--dtype f32|bf16]";
    public IReadOnlySet<string> BooleanFlags { get; } = new HashSet<string> { "greedy", "quiet", "chat" };

    public int Run(CliArgs args, TextWriter stdout, TextWriter stderr)
    {
        string dir = args.Require("model");
        string? text = args.Get("prompt");
        string? idsArg = args.Get("prompt-ids");
        string? tokDir = args.Get("tokenizer");
        bool chat = args.Has("chat");
        int maxNew = args.GetInt("max-new-tokens", 32);
        string? speculative = args.Get("speculative");
        int draftTokens = args.GetInt("draft-tokens", 1);
        var gen = GenerationConfig.TryLoad(dir);
        bool greedy = args.Has("greedy");
        bool quiet = args.Has("quiet");
        var sampling = ParseSampling(args, gen, greedy);
        var spec = DeviceOption.Read(args);
        args.RejectUnknown();
        if ((text is null) == (idsArg is null)) throw new LlmArchInputException("give exactly one of --prompt \"text\" or --prompt-ids 1,2,3");
        if (speculative is not null and not "mtp") throw new LlmArchInputException($"--speculative '{speculative}' is not supported (supported: mtp)");
        if (speculative is not null && sampling.Temperature != 0) throw new LlmArchInputException("--speculative mtp decodes greedily; drop the sampling flags or pass --greedy");

        Tokenizer? tok = null;
        List<int[]> prompts;
        if (text is not null)
        {
            tok = Tokenizer.Load(tokDir ?? dir);
            string prompt = chat ? ChatTemplate.Load(tokDir ?? dir).Render([ChatTemplate.Message("user", text)], addGenerationPrompt: true) : text;
            prompts = [tok.Encode(prompt, addSpecialTokens: !chat)];
        }
        else
        {
            if (chat) throw new LlmArchInputException("--chat needs --prompt \"text\"");
            prompts = idsArg!.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(ParseIds).ToList();
            if (prompts.Count == 0) throw new LlmArchInputException("--prompt-ids is empty");
        }

        var model = ModelLoader.Load(dir, DeviceOption.Create(spec));
        var eos = StopIds(model, gen, tok);
        var detok = tok?.CreateStreamingDetokenizer(skipSpecialTokens: true);
        void Emit(int token)
        {
            if (quiet) return;
            stdout.Write(detok is null ? token.ToString(CultureInfo.InvariantCulture) + " " : detok.Push(token));
            stdout.Flush();
        }

        if (speculative is not null)
        {
            if (prompts.Count != 1) throw new LlmArchInputException("--speculative mtp takes one prompt");
            var (tokens, acceptance, s) = SpeculativeDecoder.Generate(model, prompts[0], maxNew, eos, draftTokens);
            foreach (var t in tokens.Skip(prompts[0].Length)) Emit(t);
            if (detok is not null) stdout.Write(detok.Flush());
            stdout.WriteLine();
            stderr.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"speculative (mtp, {draftTokens} draft/step): {s.GeneratedTokens} tokens, acceptance {acceptance:P1} ({s.AcceptedTokens}/{s.DraftedTokens} drafts)"));
            return 0;
        }

        var (outs, stats) = Generator.Generate(model, prompts, maxNew, sampling, eos, prompts.Count == 1 ? (_, t) => Emit(t) : null);
        if (prompts.Count == 1)
        {
            if (detok is not null && !quiet) stdout.Write(detok.Flush());
            stdout.WriteLine();
        }
        else
            for (int i = 0; i < outs.Length; i++)
                stdout.WriteLine(string.Join(' ', outs[i].Skip(prompts[i].Length)));
        stderr.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"prefill: {stats.PromptTokens} tokens, {stats.PrefillTokensPerSecond:F1} tok/s; decode: {stats.GeneratedTokens} tokens, {stats.DecodeTokensPerSecond:F1} tok/s"));
        return 0;
    }

    /// <summary>Stop ids: generation_config.json's eos, else config.json's, plus the tokenizer's eos token.</summary>
    internal static HashSet<int> StopIds(CausalLM model, GenerationConfig? gen, Tokenizer? tok)
    {
        var eos = new HashSet<int>(gen?.EosTokenId ?? model.Config.EosTokenId ?? []);
        if (tok?.EosTokenId is int e) eos.Add(e);
        return eos;
    }

    internal static int[] ParseIds(string s)
    {
        var parts = s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out ids[i]) || ids[i] < 0)
                throw new LlmArchInputException($"--prompt-ids: '{parts[i]}' is not a token id");
        return ids;
    }

    /// <summary>Sampling flags, defaulting to generation_config.json (greedy unless it says do_sample).</summary>
    internal static SamplingOptions ParseSampling(CliArgs args, GenerationConfig? gen, bool greedy)
    {
        bool sample = gen?.DoSample == true && !greedy;
        double temp = args.GetDouble("temperature", sample ? gen!.Temperature ?? 1.0 : 0.0);
        var o = new SamplingOptions
        {
            Temperature = greedy ? 0 : temp,
            TopK = args.GetInt("top-k", sample ? gen!.TopK ?? 0 : 0),
            TopP = args.GetDouble("top-p", sample ? gen!.TopP ?? 1.0 : 1.0),
            MinP = args.GetDouble("min-p", sample ? gen!.MinP ?? 0 : 0),
            RepetitionPenalty = args.GetDouble("repetition-penalty", gen?.RepetitionPenalty ?? 1.0),
            Seed = args.Get("seed") is null ? null : args.GetInt("seed", 0),
        };
        o.Validate();
        return o;
    }
}
