using System.Buffers;
using System.Text;
using System.Text.Json;

namespace LlmArch.Checkpoints;

/// <summary>
/// Strict JSON for files that come from model repositories (safetensors headers, config.json, generation_config.json,
/// tokenizer.json, tokenizer_config.json): before a <see cref="JsonDocument"/> is handed out, one reader pass rejects
/// what System.Text.Json would accept or fail on later with an unrelated exception: invalid UTF-8, escapes that decode
/// to a lone surrogate, duplicate keys (JsonObject throws on them; JsonDocument keeps both and a lookup picks one), and
/// nesting deeper than <paramref name="maxDepth"/>. Each error names the file and the key path.
/// </summary>
public static class StrictJson
{
    /// <summary>Parses and validates; errors are <see cref="ConfigException"/>s whose message starts with <paramref name="file"/>.</summary>
    public static JsonDocument Parse(ReadOnlyMemory<byte> utf8, string file, int maxDepth = 64, bool allowComments = false, string notJson = "not valid JSON")
    {
        Validate(utf8.Span, file, maxDepth, allowComments, notJson);
        try
        {
            return JsonDocument.Parse(utf8, new JsonDocumentOptions
            {
                MaxDepth = maxDepth, AllowTrailingCommas = allowComments,
                CommentHandling = allowComments ? JsonCommentHandling.Skip : JsonCommentHandling.Disallow,
            });
        }
        catch (JsonException e) { throw new ConfigException($"{file}: {notJson} ({e.Message})"); }
    }

    /// <summary>The validation pass alone.</summary>
    public static void Validate(ReadOnlySpan<byte> utf8, string file, int maxDepth = 64, bool allowComments = false, string notJson = "not valid JSON")
    {
        int start = utf8.Length >= 3 && utf8[0] == 0xEF && utf8[1] == 0xBB && utf8[2] == 0xBF ? 3 : 0;
        if (!System.Text.Unicode.Utf8.IsValid(utf8[start..]))
            throw new ConfigException($"{file}: not valid UTF-8 (at byte {FirstInvalidUtf8(utf8[start..]) + start})");
        var reader = new Utf8JsonReader(utf8[start..], new JsonReaderOptions
        {
            MaxDepth = maxDepth, AllowTrailingCommas = allowComments,
            CommentHandling = allowComments ? JsonCommentHandling.Skip : JsonCommentHandling.Disallow,
        });
        // One frame per open container: its path segment, its keys (objects) or last index (arrays).
        var frames = new List<Frame>();
        string? pendingKey = null;
        try
        {
            while (reader.Read())
            {
                switch (reader.TokenType)
                {
                    case JsonTokenType.StartObject:
                    case JsonTokenType.StartArray:
                        frames.Add(new Frame(NextSegment(frames, pendingKey), reader.TokenType == JsonTokenType.StartObject ? new HashSet<string>(StringComparer.Ordinal) : null));
                        pendingKey = null;
                        break;
                    case JsonTokenType.EndObject:
                    case JsonTokenType.EndArray:
                        frames.RemoveAt(frames.Count - 1);
                        break;
                    case JsonTokenType.PropertyName:
                    {
                        string name = Text(ref reader, file, frames, name: null);
                        if (!frames[^1].Keys!.Add(name)) throw new ConfigException($"{file}: duplicate key '{PathOf(frames, name)}'");
                        pendingKey = name;
                        break;
                    }
                    default:
                        string seg = NextSegment(frames, pendingKey);
                        if (reader.TokenType == JsonTokenType.String) Text(ref reader, file, frames, seg);
                        pendingKey = null;
                        break;
                }
            }
        }
        catch (JsonException e)
        {
            throw new ConfigException($"{file}: {notJson} ({e.Message.Split(" LineNumber")[0].TrimEnd('.', ' ')} at line {e.LineNumber + 1})");
        }
    }

    private sealed class Frame(string segment, HashSet<string>? keys)
    {
        public readonly string Segment = segment;
        public readonly HashSet<string>? Keys = keys;
        public int Index = -1;
    }

    /// <summary>The path segment of the value about to be read: its key in an object, its index in an array.</summary>
    private static string NextSegment(List<Frame> frames, string? key)
    {
        if (frames.Count == 0) return "";
        var f = frames[^1];
        return f.Keys is not null ? key ?? "?" : $"[{++f.Index}]";
    }

    private static string PathOf(List<Frame> frames, string? last)
    {
        var sb = new StringBuilder();
        foreach (var p in frames.Select(f => f.Segment).Append(last ?? ""))
        {
            if (p.Length == 0) continue;
            if (sb.Length > 0 && p[0] != '[') sb.Append('.');
            sb.Append(p);
        }
        return sb.ToString();
    }

    /// <summary>Decodes a string token; a lone surrogate escape (<c>"\ud800"</c>) is an error naming the key.</summary>
    private static string Text(ref Utf8JsonReader reader, string file, List<Frame> frames, string? name)
    {
        if (!reader.ValueIsEscaped && name is not null) return ""; // plain UTF-8 already checked; only keys need the text
        try { return reader.GetString()!; }
        catch (InvalidOperationException)
        {
            string what = name is null ? "a key in" : "the value of";
            throw new ConfigException($"{file}: {what} '{PathOf(frames, name)}' holds an escape that is not valid UTF-16 (a lone surrogate)");
        }
    }

    private static int FirstInvalidUtf8(ReadOnlySpan<byte> s)
    {
        int offset = 0;
        char[] buf = ArrayPool<char>.Shared.Rent(1 << 16);
        try
        {
            while (true)
            {
                var status = System.Text.Unicode.Utf8.ToUtf16(s[offset..], buf, out int read, out _, replaceInvalidSequences: false);
                offset += read;
                if (status != OperationStatus.DestinationTooSmall) return offset;
            }
        }
        finally { ArrayPool<char>.Shared.Return(buf); }
    }
}
