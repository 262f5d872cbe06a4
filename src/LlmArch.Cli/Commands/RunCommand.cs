using System.CommandLine;
using System.Globalization;
using LlmArch.Checkpoints;
using LlmArch.Generation;
using LlmArch.Models;
using LlmArch.Tokenization;

namespace LlmArch.Cli.Commands;

/// <summary>
/// <c>llmarch run --model &lt;dir&gt; (--prompt "text" | --prompt-ids 1,2,3) [--max-new-tokens N] [sampling flags]
/// [--chat] [--speculative mtp]</c>: generates and streams text (or ids), then reports prefill and decode speed on
/// stderr. Several id prompts: separate them with ';' (a batch).
/// </summary>
public sealed class RunCommand : Verb
{
    public override string Name => "run";
    public override string Description => "Generate text (or token ids) from a prompt and report prefill and decode speed on stderr.";

    private readonly Option<string> _model = Opt.Model();
    private readonly Option<string?> _prompt = Opt.Text("--prompt", "prompt text (encoded with the model's tokenizer)", "text");
    private readonly Option<string?> _promptIds = Opt.Text("--prompt-ids", "prompt as token ids, 1,2,3; several prompts (a batch) separated by ';'", "ids");
    private readonly Option<string?> _tokenizer = Opt.Tokenizer("tokenizer directory when it is not the model's");
    private readonly Option<bool> _chat = Opt.Flag("--chat", "wrap --prompt in the model's chat template as one user turn");
    private readonly Option<int> _maxNew = Opt.Int("--max-new-tokens", "tokens to generate at most", 32, min: 0, max: 1 << 24);
    private readonly SamplingGroup _sampling = new();
    private readonly Option<string?> _speculative = Opt.Text("--speculative", "speculative decoding with the model's own draft head (mtp)", "mtp");
    private readonly Option<int> _draftTokens = Opt.Int("--draft-tokens", "tokens the draft head proposes per step (--speculative)", 1, min: 1, max: 16);
    private readonly Option<bool> _quiet = Opt.Flag("--quiet", "print no generated text (timing only)");
    private readonly Option<string> _quant = Opt.Choice("--quant", "weights as stored, or quantized at load", "bf16", [.. QuantNames.LoadTime.Keys]);
    private readonly DeviceGroup _device = new();

    public override int Execute(Invocation inv)
    {
        string dir = inv.Get(_model);
        string? text = inv.Get(_prompt), idsArg = inv.Get(_promptIds), tokDir = inv.Get(_tokenizer), speculative = inv.Get(_speculative);
        bool chat = inv.Get(_chat), quiet = inv.Get(_quiet);
        int maxNew = inv.Get(_maxNew), draftTokens = inv.Get(_draftTokens);
        var gen = GenerationConfig.TryLoad(dir);
        var sampling = _sampling.Resolve(inv, gen);
        var quant = QuantNames.LoadTime[inv.Get(_quant)];
        if ((text is null) == (idsArg is null)) throw new LlmArchInputException("give exactly one of --prompt \"text\" or --prompt-ids 1,2,3");
        if (speculative is not null and not "mtp") throw new LlmArchInputException($"--speculative '{speculative}' is not supported (supported: mtp)");
        if (speculative is not null && sampling.Temperature != 0) throw new LlmArchInputException("--speculative mtp decodes greedily; drop the sampling flags or pass --greedy");

        Tokenizer? tok = null;
        List<int[]> prompts;
        if (text is not null)
        {
            tok = ModelTokenizer.Load(dir, tokDir);
            var template = chat ? ModelTokenizer.LoadChatTemplate(dir, tokDir, required: true) : null;
            string prompt = template is not null ? template.Render([ChatTemplate.Message("user", text)], addGenerationPrompt: true) : text;
            prompts = [tok.Encode(prompt, addSpecialTokens: !chat)];
            if (prompts[0].Length == 0) throw new LlmArchInputException("--prompt encodes to no tokens");
        }
        else
        {
            if (chat) throw new LlmArchInputException("--chat needs --prompt \"text\"");
            prompts = ParsePromptIds(idsArg!);
        }

        using var loaded = Loading.Load(inv, dir, _device, quant is null ? null : new LoadOptions { Quantize = quant });
        var model = loaded.Model;
        var eos = Loading.StopIds(model, gen, tok);
        var detok = tok?.CreateStreamingDetokenizer(skipSpecialTokens: true);
        void Emit(int token)
        {
            if (quiet) return;
            inv.Out.Write(detok is null ? token.ToString(CultureInfo.InvariantCulture) + " " : detok.Push(token));
            inv.Out.Flush();
        }
        maxNew = Loading.FitToContext(inv, model, prompts.Max(p => p.Length), maxNew);

        if (speculative is not null)
        {
            if (prompts.Count != 1) throw new LlmArchInputException("--speculative mtp takes one prompt");
            var (tokens, acceptance, s) = SpeculativeDecoder.Generate(model, prompts[0], maxNew, eos, draftTokens);
            foreach (var t in tokens.Skip(prompts[0].Length)) Emit(t);
            if (detok is not null && !quiet) inv.Out.Write(detok.Flush());
            inv.Out.WriteLine();
            inv.Err.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"speculative (mtp, {draftTokens} draft/step): {s.GeneratedTokens} tokens, acceptance {acceptance:P1} ({s.AcceptedTokens}/{s.DraftedTokens} drafts)"));
            return 0;
        }

        var (outs, stats) = Generator.Generate(model, prompts, maxNew, sampling, eos, prompts.Count == 1 ? (_, t) => Emit(t) : null);
        if (prompts.Count == 1)
        {
            if (detok is not null && !quiet) inv.Out.Write(detok.Flush());
            inv.Out.WriteLine();
        }
        else
            for (int i = 0; i < outs.Length; i++)
                inv.Out.WriteLine(string.Join(' ', outs[i].Skip(prompts[i].Length)));
        inv.Err.WriteLine(Loading.StatsLine(stats));
        return 0;
    }

    /// <summary>"1,2,3;4,5": prompts separated by ';', ids by ','; an empty prompt or id is an error, not skipped.</summary>
    internal static List<int[]> ParsePromptIds(string s)
    {
        var prompts = new List<int[]>();
        var parts = s.Split(';');
        for (int i = 0; i < parts.Length; i++)
        {
            if (parts[i].Trim().Length == 0)
            {
                if (i == parts.Length - 1 && i > 0) continue; // a trailing ';'
                throw new LlmArchInputException(parts.Length == 1 ? "option --prompt-ids: is empty" : $"option --prompt-ids: prompt {i + 1} of '{s}' is empty");
            }
            prompts.Add(Opt.ParseIdList(parts[i], "a token id", e => throw new LlmArchInputException($"option --prompt-ids: {e}"))!);
        }
        return prompts;
    }
}
