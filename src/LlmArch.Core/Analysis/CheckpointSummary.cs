using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Analysis;

/// <summary>What a checkpoint directory's safetensors headers say: files, bytes, parameters per stored dtype.</summary>
public sealed record CheckpointSummary(int Files, long Bytes, IReadOnlyDictionary<string, long> ParamsByDType)
{
    /// <summary>"BF16", or "BF16+F32" (by descending parameter count).</summary>
    public string DTypeText => string.Join("+", ParamsByDType.Keys);

    /// <summary>
    /// Reads the weight files' headers (no tensor data), chosen as the loader chooses them: the shards named by
    /// model.safetensors.index.json, else model.safetensors, else every *.safetensors; null when there are none.
    /// </summary>
    public static CheckpointSummary? TryRead(string dir)
    {
        string index = Path.Combine(dir, "model.safetensors.index.json"), single = Path.Combine(dir, "model.safetensors");
        string[] files;
        if (File.Exists(index))
        {
            try
            {
                using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(index));
                files = doc.RootElement.GetProperty("weight_map").EnumerateObject().Select(p => p.Value.GetString() ?? "")
                    .Distinct().Select(f => Path.Combine(dir, Path.GetFileName(f))).ToArray();
            }
            catch (Exception e) when (e is System.Text.Json.JsonException or KeyNotFoundException or InvalidOperationException)
            { throw new CheckpointFormatException($"{index}: malformed index ({e.Message})"); }
        }
        else if (File.Exists(single)) files = [single];
        else files = Directory.GetFiles(dir, "*.safetensors").OrderBy(f => f, StringComparer.Ordinal).ToArray();
        if (files.Length == 0) return null;
        long bytes = 0;
        var counts = new Dictionary<string, long>();
        foreach (var f in files)
        {
            using var st = new SafeTensorsFile(f);
            bytes += st.FileBytes; // of the symlink's target in the hub cache
            foreach (var t in st.Tensors.Values)
            {
                string k = DTypes.SafetensorsName(t.DType);
                counts[k] = counts.GetValueOrDefault(k) + t.Shape.Aggregate(1L, (a, b) => a * b);
            }
        }
        return new CheckpointSummary(files.Length, bytes,
            counts.OrderByDescending(kv => kv.Value).ToDictionary(kv => kv.Key, kv => kv.Value));
    }
}
