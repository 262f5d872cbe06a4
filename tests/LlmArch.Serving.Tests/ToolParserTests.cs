using System.Text.Json;
using System.Text.Json.Nodes;
using LlmArch.Generation.Tools;
using LlmArch.Tokenization;

namespace LlmArch.Serving.Tests;

/// <summary>
/// Each family's parser reads what the family's own template renders for an assistant turn with a tool call (the
/// text the model is trained to write), whole and streamed: split at every character, one character at a time, and
/// token by token through the real tokenizer where the fixtures have it.
/// </summary>
public class ToolParserTests
{
    public sealed record Case(string Template, ToolFormat Format, string? Tokenizer, Dictionary<string, object?> Specials, bool? Thinking = null,
        string CallId = "call_abc123", string? AssistantStart = null);

    private static Dictionary<string, object?> S(params (string, string)[] kv) => kv.ToDictionary(x => x.Item1, x => (object?)x.Item2);

    public static readonly Dictionary<string, Case> Cases = new()
    {
        ["qwen3"] = new("Qwen-Qwen3-0.6B.jinja", ToolFormat.Hermes, "qwen3", S()),
        ["qwen3-nothink"] = new("Qwen-Qwen3-0.6B.jinja", ToolFormat.Hermes, "qwen3", S(), Thinking: false),
        ["hermes3"] = new("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", ToolFormat.Hermes, "llama3", S(("bos_token", "<|begin_of_text|>"))),
        ["qwen3-coder"] = new("Qwen3-Coder.jinja", ToolFormat.QwenXml, "qwen3", S()),
        ["qwen3.5"] = new("Qwen3.5-4B.jinja", ToolFormat.QwenXml, "qwen3", S()),
        ["llama3.1"] = new("meta-llama-Llama-3.1-8B-Instruct.jinja", ToolFormat.Llama3, "llama3", S(("bos_token", "<|begin_of_text|>"))),
        ["llama3.2"] = new("meta-llama-Llama-3.2-3B-Instruct.jinja", ToolFormat.Llama3, "llama3", S(("bos_token", "<|begin_of_text|>"))),
        ["gpt-oss"] = new("openai-gpt-oss-120b.jinja", ToolFormat.Harmony, "gptoss", S()),
        ["deepseek-v3"] = new("@deepseek_v3", ToolFormat.DeepSeek, "deepseek_v3", S(("bos_token", "<｜begin▁of▁sentence｜>"))),
        ["deepseek-v3.1"] = new("deepseek-ai-DeepSeek-V3.1.jinja", ToolFormat.DeepSeek, "deepseek_v3", S(("bos_token", "<｜begin▁of▁sentence｜>"))),
        ["mistral-small-3.2"] = new("Mistral-Small-3.2-24B-Instruct-2506.jinja", ToolFormat.Mistral, null, S(("bos_token", "<s>"), ("eos_token", "</s>")), CallId: "abcDEF123"),
        ["mistral-nemo"] = new("mistralai-Mistral-Nemo-Instruct-2407.jinja", ToolFormat.Mistral, null, S(("bos_token", "<s>"), ("eos_token", "</s>")), CallId: "abcDEF123", AssistantStart: "[/INST]"),
        ["glm-4.6"] = new("GLM-4.6.jinja", ToolFormat.Glm, null, S()),
        ["kimi-k2"] = new("moonshotai-Kimi-K2.jinja", ToolFormat.Kimi, null, S()),
        ["kimi-k2-instruct"] = new("Kimi-K2-Instruct.jinja", ToolFormat.Kimi, null, S()),
        ["minimax-m2"] = new("MiniMax-M2.jinja", ToolFormat.MiniMax, null, S()),
    };

    public static IEnumerable<object[]> CaseNames => Cases.Keys.Select(k => new object[] { k });

    public static readonly ToolSpec[] Tools =
    [
        new("get_weather", "Weather forecast for a city", JsonDocument.Parse("""{"type":"object","properties":{"city":{"type":"string","description":"city name"},"days":{"type":"integer"}},"required":["city","days"]}""").RootElement),
        new("search", "Web search", JsonDocument.Parse("""{"type":"object","properties":{"query":{"type":"string"}},"required":["query"]}""").RootElement),
    ];

    public static ChatTemplate LoadTemplate(Case c) => c.Template.StartsWith('@')
        ? ChatTemplate.Load(TestData.TokenizerDir(c.Template[1..]))
        : ChatTemplate.FromString(File.ReadAllText(TestData.TemplatePath(c.Template)), c.Specials);

    /// <summary>The model's side of a turn as the template renders it: what follows the generation prompt, up to the end of turn.</summary>
    public static (string Prompt, string Output) RenderedTurn(Case c, ChatTurn assistant)
    {
        var template = LoadTemplate(c);
        var format = ChatFormat.Detect(template.Source);
        var history = new List<ChatTurn> { ChatTurn.System("You are a helpful assistant."), ChatTurn.User("What is the weather in Paris for the next 3 days?") };
        var extra = c.Thinking is bool t ? new Dictionary<string, object?> { ["enable_thinking"] = t } : null;
        string p1 = ChatFormat.Render(template, history, Tools, addGenerationPrompt: true, extra);
        string p2 = ChatFormat.Render(template, [.. history, assistant], Tools, addGenerationPrompt: false, extra);
        int lcp = 0;
        while (lcp < p1.Length && lcp < p2.Length && p1[lcp] == p2[lcp]) lcp++;
        // Where the template moves earlier text around (Mistral Nemo renders the tools into the last user turn), the
        // model's part starts after the last generation-prompt marker instead.
        string output = c.AssistantStart is { } a ? p2[(p2.LastIndexOf(a, StringComparison.Ordinal) + a.Length)..] : p2[lcp..];
        int cut = output.Length;
        foreach (var end in format.EndOfTurn)
        {
            int i = output.IndexOf(end, StringComparison.Ordinal);
            if (i >= 0 && i < cut) cut = i;
        }
        output = output[..cut];
        if (format.PromptOpensReasoning(p1) && !output.Contains(format.ThinkClose!))
            output = "I should call the weather tool." + format.ThinkClose + "\n\n" + output;
        return (p1, output);
    }

    private static ChatTurn CallTurn(Case c, params (string Name, string Args)[] calls) => new()
    {
        Role = "assistant",
        Reasoning = c.Thinking == false ? null : "I should call the weather tool.",
        ToolCalls = calls.Select((x, i) => new ChatToolCall(i == 0 ? c.CallId : c.CallId[..^1] + "9", x.Name, x.Args)).ToList(),
    };

    private static List<OutputEvent> Parse(Case c, string prompt, IEnumerable<string> pieces)
    {
        var format = ChatFormat.Detect(LoadTemplate(c).Source);
        var parser = format.CreateParser(Tools, format.PromptOpensReasoning(prompt));
        var events = new List<OutputEvent>();
        foreach (var p in pieces) parser.Push(p, events);
        parser.Finish(events);
        return OutputParser.Coalesce(events);
    }

    private static void AssertSame(List<OutputEvent> expected, List<OutputEvent> actual, string how)
    {
        Assert.True(expected.Count == actual.Count, $"{how}: {actual.Count} events, expected {expected.Count}: {string.Join(" | ", actual)}");
        for (int i = 0; i < expected.Count; i++) Assert.True(expected[i] == actual[i], $"{how}: event {i} is {actual[i]}, expected {expected[i]}");
    }

    /// <summary>Streams split at every position, one char at a time, and (with a tokenizer) token by token give the whole-text result.</summary>
    private static void AssertStreamingAgrees(Case c, string prompt, string output, List<OutputEvent> whole)
    {
        for (int i = 1; i < output.Length; i++) AssertSame(whole, Parse(c, prompt, [output[..i], output[i..]]), $"split at {i}");
        AssertSame(whole, Parse(c, prompt, output.Select(ch => ch.ToString())), "char by char");
        if (c.Tokenizer is { } tn)
        {
            var tok = TestData.RealTokenizer(tn);
            var ids = tok.Encode(output);
            var detok = tok.CreateStreamingDetokenizer();
            var pieces = ids.Select(id => detok.Push(id)).Append(detok.Flush()).ToList();
            Assert.Equal(output, string.Concat(pieces));
            AssertSame(whole, Parse(c, prompt, pieces), "token by token");
        }
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void ParsesTheTemplatesOwnToolCall(string name)
    {
        var c = Cases[name];
        Assert.Equal(c.Format, ChatFormat.Detect(LoadTemplate(c).Source).Tools);
        var (prompt, output) = RenderedTurn(c, CallTurn(c, ("get_weather", """{"city":"Paris","days":3}""")));
        var whole = Parse(c, prompt, [output]);
        var calls = whole.Where(e => e.Kind == OutputEventKind.ToolCall).ToList();
        Assert.True(calls.Count == 1, $"{name}: expected one call in {output}, got {string.Join(" | ", whole)}");
        Assert.Equal("get_weather", calls[0].ToolName);
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"city":"Paris","days":3}"""), JsonNode.Parse(calls[0].ArgumentsJson!)), calls[0].ArgumentsJson);
        Assert.DoesNotContain(whole, e => e.Kind == OutputEventKind.Content);
        foreach (var r in whole.Where(e => e.Kind == OutputEventKind.Reasoning)) Assert.Equal("I should call the weather tool.", r.Text);
        AssertStreamingAgrees(c, prompt, output, whole);
    }

    [Theory]
    [InlineData("qwen3")]
    [InlineData("qwen3-coder")]
    [InlineData("deepseek-v3.1")]
    [InlineData("mistral-small-3.2")]
    [InlineData("mistral-nemo")]
    [InlineData("glm-4.6")]
    [InlineData("kimi-k2")]
    [InlineData("minimax-m2")]
    public void ParsesSeveralCallsInOneTurn(string name)
    {
        var c = Cases[name];
        var (prompt, output) = RenderedTurn(c, CallTurn(c, ("get_weather", """{"city":"Paris","days":3}"""), ("search", """{"query":"Paris events"}""")));
        var whole = Parse(c, prompt, [output]);
        var calls = whole.Where(e => e.Kind == OutputEventKind.ToolCall).Select(e => e.ToolName).ToList();
        Assert.Equal(["get_weather", "search"], calls);
        Assert.Equal("""{"query":"Paris events"}""", whole.Last(e => e.Kind == OutputEventKind.ToolCall).ArgumentsJson);
        AssertStreamingAgrees(c, prompt, output, whole);
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void PlainAnswersStayContent(string name)
    {
        var c = Cases[name];
        var (prompt, output) = RenderedTurn(c, new ChatTurn { Role = "assistant", Content = "It will be sunny, 24 °C. Use <b>sunscreen</b> {really}." });
        var whole = Parse(c, prompt, [output]);
        Assert.DoesNotContain(whole, e => e.Kind == OutputEventKind.ToolCall);
        Assert.Equal("It will be sunny, 24 °C. Use <b>sunscreen</b> {really}.", string.Concat(whole.Where(e => e.Kind == OutputEventKind.Content).Select(e => e.Text)));
        AssertStreamingAgrees(c, prompt, output, whole);
    }

    [Fact]
    public void Qwen3ReasoningThenAnswerIsSeparated()
    {
        var c = Cases["qwen3"];
        var (prompt, output) = RenderedTurn(c, new ChatTurn { Role = "assistant", Reasoning = "The user greets me.", Content = "Hello!" });
        Assert.Contains("<think>", output);
        var whole = Parse(c, prompt, [output]);
        Assert.Equal([OutputEvent.ReasoningOf("The user greets me."), OutputEvent.ContentOf("Hello!")], whole);
        AssertStreamingAgrees(c, prompt, output, whole);
    }

    [Fact]
    public void DeepSeekR1PromptOpensReasoning()
    {
        var c = new Case("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", ToolFormat.None, "deepseek_v3", S(("bos_token", "<｜begin▁of▁sentence｜>")));
        var template = LoadTemplate(c);
        var format = ChatFormat.Detect(template.Source);
        string prompt = ChatFormat.Render(template, [ChatTurn.User("2+2?")], null, true, new Dictionary<string, object?> { ["enable_thinking"] = true });
        Assert.True(format.PromptOpensReasoning(prompt));
        var parser = format.CreateParser(null, true);
        var whole = OutputParser.Coalesce(parser.ParseAll("Two plus two.\n</think>\n\n4"));
        Assert.Equal([OutputEvent.ReasoningOf("Two plus two."), OutputEvent.ContentOf("4")], whole);
    }

    [Fact]
    public void HarmonyAnalysisThenFinal()
    {
        var parser = new HarmonyParser(parseTools: false);
        var whole = OutputParser.Coalesce(parser.ParseAll("<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>Answer."));
        Assert.Equal([OutputEvent.ReasoningOf("Think."), OutputEvent.ContentOf("Answer.")], whole);
        // The recipient may also come after the channel.
        var calls = OutputParser.Coalesce(new HarmonyParser(true).ParseAll("<|channel|>commentary to=functions.search <|constrain|>json<|message|>{\"query\":\"x\"}"));
        Assert.Equal([OutputEvent.Call("search", "{\"query\":\"x\"}")], calls);
    }

    [Fact]
    public void ToolsAreParsedOnlyWhenOffered()
    {
        var format = ChatFormat.Detect(File.ReadAllText(TestData.TemplatePath("Qwen-Qwen3-0.6B.jinja")));
        var whole = OutputParser.Coalesce(format.CreateParser(null, false).ParseAll("<tool_call>\n{\"name\":\"x\",\"arguments\":{}}\n</tool_call>"));
        Assert.Equal([OutputEvent.ContentOf("<tool_call>\n{\"name\":\"x\",\"arguments\":{}}\n</tool_call>")], whole);
    }

    [Fact]
    public void MalformedCallStaysText()
    {
        var format = ChatFormat.Detect(File.ReadAllText(TestData.TemplatePath("Qwen-Qwen3-0.6B.jinja")));
        var whole = OutputParser.Coalesce(format.CreateParser(Tools, false).ParseAll("Sure. <tool_call>{\"name\": broken</tool_call>"));
        Assert.Equal([OutputEvent.ContentOf("Sure. <tool_call>{\"name\": broken</tool_call>")], whole);
    }

    [Fact]
    public void ToolResultsRenderBack()
    {
        // A whole loop as every template sees it: call, tool result, and the assistant's next turn.
        foreach (var (name, c) in Cases)
        {
            var template = LoadTemplate(c);
            var msgs = new List<ChatTurn>
            {
                ChatTurn.User("Weather in Paris?"),
                new() { Role = "assistant", ToolCalls = [new ChatToolCall(c.CallId, "get_weather", """{"city":"Paris","days":1}""")] },
                new() { Role = "tool", ToolCallId = c.CallId, Content = "sunny, 24C" },
            };
            string text = ChatFormat.Render(template, msgs, Tools, true, null);
            Assert.True(text.Contains("sunny, 24C"), $"{name}: tool result not rendered:\n{text}");
            Assert.True(text.Contains("get_weather"), $"{name}: call not rendered");
        }
    }

    [Fact]
    public void ChatFormatIds()
    {
        Assert.Matches("^[a-zA-Z0-9]{9}$", new ChatFormat { Tools = ToolFormat.Mistral }.NewToolCallId("f", 0));
        Assert.Equal("functions.f:2", new ChatFormat { Tools = ToolFormat.Kimi }.NewToolCallId("f", 2));
        Assert.StartsWith("call_", new ChatFormat { Tools = ToolFormat.Hermes }.NewToolCallId("f", 0));
    }

    [Fact]
    public void StopStringsHoldBackPartialMatches()
    {
        var s = new StopStrings(["END", "##"]);
        Assert.Equal("ab", s.Push("abE"));
        Assert.Equal("", s.Push("N"));
        Assert.Equal("ENx", s.Push("x"));
        Assert.Equal("y", s.Push("y#"));
        Assert.Equal("", s.Push("#z"));
        Assert.True(s.Matched);
        Assert.Equal("", s.Flush());
    }
}
