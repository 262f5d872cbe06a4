using System.CommandLine;
using LlmArch.Server;

namespace LlmArch.Cli.Commands;

/// <summary><c>llmarch serve --model DIR</c>: the OpenAI-compatible HTTP server over one model, until Ctrl-C.</summary>
public sealed class ServeCommand : Verb
{
    public override string Name => "serve";
    public override string Description => "Serve a model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models, /health, /metrics) with continuous batching and prompt-prefix reuse, until Ctrl-C.";

    private readonly Option<string> _model = Opt.Model();
    private readonly Option<string?> _host = Opt.Text("--host", "address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)", "HOST");
    private readonly Option<int> _port = Opt.Int("--port", "TCP port (0 = any free port, printed at start)", 8080, min: 0, max: 65535);
    private readonly Option<int> _parallel = Opt.Int("--parallel", "sequences generated at once (the engine's cache slots)", 8, min: 1, max: 1024);
    private readonly Option<int?> _ctx = Opt.OptionalInt("--ctx", "tokens per sequence, prompt + generated (default: the model's, capped at 4096)", min: 2, max: 1 << 22);
    private readonly Option<int> _queue = Opt.Int("--max-queue", "requests that may wait for a slot before new ones get 429", 64, min: 0, max: 1 << 20);
    private readonly Option<string?> _quant = Opt.Text("--quant", "quantize weights at load (q8_0, q4_0, q4_k)", "QUANT");
    private readonly Option<string?> _tokenizer = Opt.Text("--tokenizer", "directory of tokenizer.json when not the model's", "DIR");
    private readonly Option<string?> _name = Opt.Text("--name", "the model id in responses (default: the directory name)", "ID");
    private readonly Option<bool> _quiet = Opt.Flag("--quiet", "no per-request log lines on stderr");
    private readonly DeviceGroup _device = new();

    public override int Execute(Invocation inv)
    {
        var options = new ServeOptions
        {
            ModelPath = inv.Get(_model), Host = inv.Get(_host) ?? "127.0.0.1", Port = inv.Get(_port), Parallel = inv.Get(_parallel),
            Context = inv.Get(_ctx), MaxQueue = inv.Get(_queue), Quantization = inv.Get(_quant), TokenizerPath = inv.Get(_tokenizer),
            ModelName = inv.Get(_name), Log = !inv.Get(_quiet), Device = inv.Get(_device.Device) ?? "cpu", Threads = inv.Get(_device.Threads),
            TensorParallel = inv.Get(_device.TensorParallel), ExpertParallel = inv.Get(_device.ExpertParallel),
        };
        using var stop = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; stop.Cancel(); };
        Console.CancelKeyPress += onCancel;
        try
        {
            var server = LlmServer.StartAsync(options, stop.Token).GetAwaiter().GetResult();
            inv.Err.WriteLine($"llmarch serve: {server.Model.Name} on {server.BaseAddress} (parallel {options.Parallel}); Ctrl-C stops");
            try { server.RunAsync(stop.Token).GetAwaiter().GetResult(); }
            catch (OperationCanceledException) { }
            finally { server.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
            return 0;
        }
        finally { Console.CancelKeyPress -= onCancel; }
    }
}
