using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using LlmArch.Tokenization;

namespace LlmArch.Cli.Commands;

/// <summary>
/// <c>llmarch tokenize</c>: encodes JSON strings to id arrays (or, with --decode, id arrays to JSON strings), one per
/// line, with a model's tokenizer.json. <c>--bench MB</c> measures encoding throughput on generated mixed text.
/// </summary>
public sealed class TokenizeCommand : Verb
{
    public override string Name => "tokenize";
    public override string Description => "Encode text to token ids, or decode ids to text, with a model's tokenizer.json (one JSON value per line with --jsonl); --bench measures encoding speed.";

    private readonly Option<string?> _tokenizer = Opt.Tokenizer("tokenizer directory, tokenizer.json file, cache folder or repo id", required: true);
    private readonly Option<string?> _jsonl = Opt.Text("--jsonl", "file with one JSON string (or, with --decode, one id array) per line", "file");
    private readonly Option<string?> _text = Opt.Text("--text", "text to encode", "text");
    private readonly Option<IdList?> _ids = Opt.IdList("--ids", "ids to decode (with --decode)", "an integer id");
    private readonly Option<string?> _bench = Opt.Text("--bench", "encode this many MB of generated mixed text and report the speed", "MB");
    private readonly Option<bool> _addSpecial = Opt.Flag("--add-special", "apply the post-processor (BOS/EOS) when encoding");
    private readonly Option<bool> _decode = Opt.Flag("--decode", "decode ids to text");
    private readonly Option<bool> _skipSpecial = Opt.Flag("--skip-special", "leave special tokens out when decoding");

    private static readonly JsonSerializerOptions JsonOut = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public override int Execute(Invocation inv)
    {
        string dir = inv.Get(_tokenizer)!;
        string? jsonl = inv.Get(_jsonl), text = inv.Get(_text), bench = inv.Get(_bench);
        int[]? ids = inv.Get(_ids)?.Ids;
        bool addSpecial = inv.Get(_addSpecial), decode = inv.Get(_decode), skipSpecial = inv.Get(_skipSpecial);
        var stdout = inv.Out;

        int inputs = (jsonl is null ? 0 : 1) + (text is null ? 0 : 1) + (ids is null ? 0 : 1) + (bench is null ? 0 : 1);
        if (inputs != 1) throw new LlmArchInputException("give exactly one of --jsonl FILE, --text STRING, --ids 1,2,3 or --bench MB");
        if (text is not null && decode) throw new LlmArchInputException("--decode reads id arrays: use --ids or --jsonl, not --text");
        if (ids is not null && !decode) throw new LlmArchInputException("--ids needs --decode");

        var tok = Tokenizer.Load(dir);
        if (bench is not null) return Bench(tok, () => Tokenizer.Load(dir), bench, stdout);
        if (text is not null)
        {
            stdout.WriteLine(IdsJson(tok.Encode(text, addSpecial)));
            return 0;
        }
        if (ids is not null)
        {
            stdout.WriteLine(JsonSerializer.Serialize(tok.Decode(ids, skipSpecial), JsonOut));
            return 0;
        }

        int lineNo = 0;
        foreach (var line in ReadUtf8Lines(jsonl!).ToList())
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            string where = $"{jsonl}: line {lineNo}";
            JsonElement el;
            try { el = JsonDocument.Parse(line).RootElement; }
            catch (JsonException e) { throw new LlmArchInputException($"{where}: not valid JSON ({e.Message})"); }
            if (!decode)
            {
                if (el.ValueKind != JsonValueKind.String) throw new LlmArchInputException($"{where}: expected a JSON string, got {el.ValueKind}");
                stdout.WriteLine(IdsJson(tok.Encode(el.GetString()!, addSpecial)));
            }
            else
            {
                if (el.ValueKind != JsonValueKind.Array) throw new LlmArchInputException($"{where}: expected a JSON array of ids, got {el.ValueKind}");
                var arr = new int[el.GetArrayLength()];
                int k = 0;
                foreach (var x in el.EnumerateArray())
                {
                    if (x.ValueKind != JsonValueKind.Number || !x.TryGetInt32(out arr[k++]))
                        throw new LlmArchInputException($"{where}: ids must be integers, got {x}");
                }
                try { stdout.WriteLine(JsonSerializer.Serialize(tok.Decode(arr, skipSpecial), JsonOut)); }
                catch (LlmArchInputException e) { throw new LlmArchInputException($"{where}: {e.Message}"); }
            }
        }
        return 0;
    }

    private static string IdsJson(int[] ids) => "[" + string.Join(",", ids) + "]";

    /// <summary>Reads a file as strict UTF-8: invalid bytes are an input error naming the line.</summary>
    private static IEnumerable<string> ReadUtf8Lines(string path)
    {
        byte[] bytes = CliFiles.ReadInput(path, "--jsonl", CliFiles.MaxJsonlBytes);
        var strict = new UTF8Encoding(false, throwOnInvalidBytes: true);
        int start = bytes.Length >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF ? 3 : 0;
        int lineNo = 1;
        for (int i = start; i <= bytes.Length; i++)
        {
            if (i < bytes.Length && bytes[i] != (byte)'\n') continue;
            int end = i > start && bytes[i - 1] == (byte)'\r' ? i - 1 : i;
            string line;
            try { line = strict.GetString(bytes, start, end - start); }
            catch (DecoderFallbackException) { throw new LlmArchInputException($"{path}: line {lineNo} is not valid UTF-8"); }
            if (i < bytes.Length || line.Length > 0) yield return line;
            start = i + 1;
            lineNo++;
        }
    }

    private static int Bench(Tokenizer tok, Func<Tokenizer> reload, string mbArg, TextWriter stdout)
    {
        if (!double.TryParse(mbArg, NumberStyles.Float, CultureInfo.InvariantCulture, out double mb) || mb <= 0 || mb > 1024)
            throw new LlmArchInputException($"option --bench: '{mbArg}' is not a size in MB between 0 and 1024");
        var docs = BenchText.Generate((long)(mb * 1024 * 1024));
        long bytes = docs.Sum(d => (long)Encoding.UTF8.GetByteCount(d));
        // Best of three passes, each on a fresh instance (word cache cold except for a 5% warm-up): a single pass runs
        // mostly tier-0 JIT code and reads 2-3x slower than the steady state.
        var proc = Process.GetCurrentProcess();
        double secs = double.MaxValue, cpu = double.MaxValue;
        long tokens = 0;
        for (int rep = 0; rep < 3; rep++)
        {
            var t = rep == 0 ? tok : reload();
            foreach (var d in docs.Take(Math.Max(1, docs.Count / 20))) t.Encode(d); // warm-up (caches)
            GC.Collect();
            proc.Refresh();
            var cpu0 = proc.TotalProcessorTime;
            var sw = Stopwatch.StartNew();
            tokens = 0;
            foreach (var d in docs) tokens += t.Encode(d).Length;
            sw.Stop();
            proc.Refresh();
            secs = Math.Min(secs, sw.Elapsed.TotalSeconds);
            cpu = Math.Min(cpu, (proc.TotalProcessorTime - cpu0).TotalSeconds);
        }
        double mbs = bytes / 1048576.0;
        // Encoding is single-threaded: CPU time is what the wall time would be on an otherwise idle core.
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"encoded {mbs:F2} MB ({docs.Count} docs, {tokens} tokens), best of 3: {secs:F2} s wall, {cpu:F2} s CPU: {mbs / secs:F2} MB/s wall, {mbs / cpu:F2} MB/s CPU"));
        return 0;
    }
}
