using System.Globalization;
using LlmArch.Checkpoints;
using LlmArch.Generation;
using LlmArch.Models;
using LlmArch.Tokenization;

namespace LlmArch.Cli.Commands;

/// <summary>
/// <c>llmarch chat --model &lt;dir&gt;</c>: interactive multi-turn chat. Each line on stdin is a user turn; the
/// conversation is rendered with the model's chat template and the reply streams as it is generated.
/// An empty line or end of input ends the chat; <c>/reset</c> starts over.
/// </summary>
public sealed class ChatCommand : ICommand
{
    public string Name => "chat";
    public string Summary => "interactive chat: chat --model <dir> [--system \"...\"] [--max-new-tokens N] [sampling flags] [--device cpu|cuda[:N]] [--dtype f32|bf16] [--enable-thinking true|false]";
    public IReadOnlySet<string> BooleanFlags { get; } = new HashSet<string> { "greedy" };

    public int Run(CliArgs args, TextWriter stdout, TextWriter stderr) => Run(args, Console.In, stdout, stderr);

    public int Run(CliArgs args, TextReader stdin, TextWriter stdout, TextWriter stderr)
    {
        string dir = args.Require("model");
        string tokDir = args.Get("tokenizer") ?? dir;
        string? system = args.Get("system");
        int maxNew = args.GetInt("max-new-tokens", 256);
        string? thinking = args.Get("enable-thinking");
        var gen = GenerationConfig.TryLoad(dir);
        var sampling = RunCommand.ParseSampling(args, gen, args.Has("greedy"));
        var spec = DeviceOption.Read(args);
        args.RejectUnknown();
        var extra = new Dictionary<string, object?>();
        if (thinking is not null)
            extra["enable_thinking"] = thinking switch
            {
                "true" => true, "false" => false,
                _ => throw new LlmArchInputException($"--enable-thinking must be true or false (got '{thinking}')"),
            };

        var tok = Tokenizer.Load(tokDir);
        var template = ChatTemplate.Load(tokDir);
        var model = ModelLoader.Load(dir, DeviceOption.Create(spec));
        var eos = RunCommand.StopIds(model, gen, tok);
        var messages = new List<object?>();
        if (system is not null) messages.Add(ChatTemplate.Message("system", system));
        stderr.WriteLine($"chat with {Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir)))} (empty line to quit, /reset to start over)");
        while (true)
        {
            stdout.Write("> "); stdout.Flush();
            string? line = stdin.ReadLine();
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
                stderr.WriteLine($"llmarch chat: the conversation ({prompt.Length} tokens) no longer fits max_position_embeddings {model.MaxPositions}; /reset to start over");
                messages.RemoveAt(messages.Count - 1);
                continue;
            }
            var detok = tok.CreateStreamingDetokenizer(skipSpecialTokens: true);
            var (outs, stats) = Generator.Generate(model, [prompt], maxNew, sampling, eos, (_, t) =>
            {
                stdout.Write(detok.Push(t));
                stdout.Flush();
            });
            stdout.WriteLine(detok.Flush());
            var reply = outs[0].Skip(prompt.Length).Where(t => !eos.Contains(t)).ToArray();
            messages.Add(ChatTemplate.Message("assistant", tok.Decode(reply, skipSpecialTokens: true)));
            stderr.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"[{stats.PromptTokens} prompt tokens, {stats.PrefillTokensPerSecond:F0} tok/s prefill; {stats.GeneratedTokens} tokens, {stats.DecodeTokensPerSecond:F1} tok/s decode]"));
        }
        return 0;
    }
}
