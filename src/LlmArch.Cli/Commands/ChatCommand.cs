using System.CommandLine;
using System.Globalization;
using LlmArch.Checkpoints;
using LlmArch.Generation;
using LlmArch.Tokenization;

namespace LlmArch.Cli.Commands;

/// <summary>
/// <c>llmarch chat --model &lt;dir&gt;</c>: interactive multi-turn chat. Each line on stdin is a user turn; the
/// conversation is rendered with the model's chat template and the reply streams to stdout as it is generated; the
/// "> " prompt, notices and timing go to stderr, so stdout holds only the replies. An empty line or end of input ends
/// the chat; <c>/reset</c> starts over.
/// </summary>
public sealed class ChatCommand : Verb
{
    public override string Name => "chat";
    public override string Description => "Chat with a model: each line on stdin is a user turn, replies stream to stdout (empty line to quit, /reset to start over).";

    private readonly Option<string> _model = Opt.Model();
    private readonly Option<string?> _tokenizer = Opt.Tokenizer("tokenizer directory when it is not the model's");
    private readonly Option<string?> _system = Opt.Text("--system", "system prompt", "text");
    private readonly Option<int> _maxNew = Opt.Int("--max-new-tokens", "tokens per reply at most", 256, min: 1, max: 1 << 24);
    private readonly SamplingGroup _sampling = new();
    private readonly Option<Toggle?> _thinking = Opt.Switch("--enable-thinking", "the template's enable_thinking switch (Qwen3 and others)",
        t => $"--enable-thinking must be true or false (got '{t}')");
    private readonly DeviceGroup _device = new();

    public override int Execute(Invocation inv)
    {
        string dir = inv.Get(_model);
        string tokDir = inv.Get(_tokenizer) ?? dir;
        string? system = inv.Get(_system);
        int maxNew = inv.Get(_maxNew);
        var gen = GenerationConfig.TryLoad(dir);
        var sampling = _sampling.Resolve(inv, gen);
        var extra = new Dictionary<string, object?>();
        if (inv.Get(_thinking) is { } thinking) extra["enable_thinking"] = thinking.On;

        var tok = ModelTokenizer.Load(dir, inv.Get(_tokenizer));
        var template = ModelTokenizer.LoadChatTemplate(dir, inv.Get(_tokenizer), required: true)!;
        using var loaded = Loading.Load(inv, dir, _device);
        var model = loaded.Model;
        var eos = Loading.StopIds(model, gen, tok);
        var messages = new List<object?>();
        if (system is not null) messages.Add(ChatTemplate.Message("system", system));
        inv.Err.WriteLine($"chat with {Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir)))} (empty line to quit, /reset to start over)");
        while (true)
        {
            inv.Err.Write("> "); inv.Err.Flush();
            string? line = inv.In.ReadLine();
            if (string.IsNullOrWhiteSpace(line)) break;
            if (line.Trim() == "/reset")
            {
                messages.RemoveAll(m => m is Dictionary<string, object?> d && d["role"] as string != "system");
                continue;
            }
            messages.Add(ChatTemplate.Message("user", line));
            var prompt = tok.Encode(template.Render(messages, addGenerationPrompt: true, extra), addSpecialTokens: false);
            if (prompt.Length >= model.MaxPositions)
            {
                inv.Note($"the conversation ({prompt.Length} tokens) no longer fits max_position_embeddings {model.MaxPositions}; /reset to start over");
                messages.RemoveAt(messages.Count - 1);
                continue;
            }
            int budget = Loading.FitToContext(inv, model, prompt.Length, maxNew);
            var detok = tok.CreateStreamingDetokenizer(skipSpecialTokens: true);
            var (outs, stats) = Generator.Generate(model, [prompt], budget, sampling, eos, (_, t) =>
            {
                inv.Out.Write(detok.Push(t));
                inv.Out.Flush();
            });
            inv.Out.WriteLine(detok.Flush());
            var reply = outs[0].Skip(prompt.Length).Where(t => !eos.Contains(t)).ToArray();
            messages.Add(ChatTemplate.Message("assistant", tok.Decode(reply, skipSpecialTokens: true)));
            string decode = stats.GeneratedTokens > 1 && stats.DecodeSeconds > 0
                ? string.Create(CultureInfo.InvariantCulture, $"{stats.GeneratedTokens} tokens, {stats.DecodeTokensPerSecond:F1} tok/s decode")
                : $"{stats.GeneratedTokens} tokens";
            inv.Err.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"[{stats.PromptTokens} prompt tokens, {stats.PrefillTokensPerSecond:F0} tok/s prefill; {decode}]"));
        }
        return 0;
    }
}
