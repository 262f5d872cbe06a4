using System.ClientModel;
using System.Diagnostics;
using System.Text.RegularExpressions;
using OpenAI;
using OpenAI.Chat;

namespace LlmArch.Serving.Tests;

/// <summary>
/// <c>llmarch serve</c> as a user runs it: the built CLI in its own process, the OpenAI SDK talking to it over loopback,
/// then a clean stop. Concurrent streams share the batching engine.
/// </summary>
public sealed class ServeVerbTests
{
    private static string CliDll()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "LlmArch.sln"))) d = d.Parent;
        string root = d?.FullName ?? throw new InvalidOperationException("repository root not found");
        string config = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Debug{Path.DirectorySeparatorChar}") ? "Debug" : "Release";
        return Path.Combine(root, "src", "LlmArch.Cli", "bin", config, "net10.0", "llmarch.dll");
    }

    [Fact]
    public async Task ServeVerbAnswersTheOpenAiSdkAndStops()
    {
        string dll = CliDll();
        Assert.True(File.Exists(dll), $"{dll} not built");
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false,
            ArgumentList = { dll, "serve", "--model", TinyModels.ModelDir, "--tokenizer", TinyModels.TokenizerDir, "--port", "0", "--parallel", "4", "--quiet", "--threads", "1" },
        };
        using var p = Process.Start(psi)!;
        try
        {
            // The first stderr line names the address it listens on.
            var lineTask = p.StandardError.ReadLineAsync();
            string line = await lineTask.WaitAsync(TimeSpan.FromSeconds(120)) ?? "";
            var m = Regex.Match(line, @"on (http://\S+?)/? \(");
            Assert.True(m.Success, $"unexpected first line: {line}");
            var baseUri = new Uri(m.Groups[1].Value.TrimEnd('/') + "/");
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
            Assert.Contains("ok", await http.GetStringAsync(new Uri(baseUri, "health")));
            var client = new ChatClient("tiny", new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(baseUri, "v1") });
            var options = new ChatCompletionOptions { MaxOutputTokenCount = 6, Temperature = 0 };
            var answers = await Task.WhenAll(Enumerable.Range(0, 4).Select(async i =>
            {
                var text = new System.Text.StringBuilder();
                await foreach (var u in client.CompleteChatStreamingAsync([new UserChatMessage($"hello {i}")], options))
                    foreach (var part in u.ContentUpdate) text.Append(part.Text);
                return text.ToString();
            }));
            Assert.Equal(4, answers.Length);
            var again = await client.CompleteChatAsync([new UserChatMessage("hello 0")], options);
            Assert.Equal(answers[0], again.Value.Content[0].Text); // greedy: the same answer, streamed or not
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
            await p.WaitForExitAsync();
        }
    }
}
