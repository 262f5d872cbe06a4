using System.Text;

namespace LlmArch.Generation.Tools;

/// <summary>What a parser found in the model's output.</summary>
public enum OutputEventKind { Content, Reasoning, ToolCall }

/// <summary>A piece of parsed output: text of the answer or of the reasoning, or one complete tool call.</summary>
public readonly record struct OutputEvent(OutputEventKind Kind, string Text, string? ToolName = null, string? ArgumentsJson = null, string? ToolId = null)
{
    public static OutputEvent ContentOf(string s) => new(OutputEventKind.Content, s);
    public static OutputEvent ReasoningOf(string s) => new(OutputEventKind.Reasoning, s);
    public static OutputEvent Call(string name, string args, string? id = null) => new(OutputEventKind.ToolCall, "", name, args, id);
}

/// <summary>
/// Splits a model's raw output text (special tokens of the format included) into answer, reasoning and tool calls as
/// it streams. The result never depends on how the text was split: whatever might still be the start of a marker is
/// held back until the next piece decides it.
/// </summary>
public abstract class OutputParser
{
    /// <summary>Adds the next piece of raw output; appends what it completes to <paramref name="events"/>.</summary>
    public abstract void Push(string text, List<OutputEvent> events);
    /// <summary>The output ended (a stop token, the length limit): flushes whatever is held back.</summary>
    public abstract void Finish(List<OutputEvent> events);

    /// <summary>Parses a whole output at once (what streaming must reproduce).</summary>
    public List<OutputEvent> ParseAll(string text)
    {
        var events = new List<OutputEvent>();
        Push(text, events);
        Finish(events);
        return events;
    }

    /// <summary>Merges adjacent text events of the same kind (for comparing streamed and whole results).</summary>
    public static List<OutputEvent> Coalesce(IEnumerable<OutputEvent> events)
    {
        var r = new List<OutputEvent>();
        foreach (var e in events)
        {
            if (e.Kind != OutputEventKind.ToolCall && e.Text.Length == 0) continue;
            if (r.Count > 0 && e.Kind != OutputEventKind.ToolCall && r[^1].Kind == e.Kind) r[^1] = r[^1] with { Text = r[^1].Text + e.Text };
            else r.Add(e);
        }
        return r;
    }

    /// <summary>Length of the longest suffix of <paramref name="s"/> (from <paramref name="start"/>) that is a proper prefix of a marker.</summary>
    protected static int PartialMarkerSuffix(StringBuilder s, int start, IReadOnlyList<string> markers)
    {
        int best = 0;
        foreach (var m in markers)
        {
            for (int k = Math.Min(m.Length - 1, s.Length - start); k > best; k--)
            {
                bool match = true;
                for (int j = 0; j < k; j++)
                    if (s[s.Length - k + j] != m[j]) { match = false; break; }
                if (match) { best = k; break; }
            }
        }
        return best;
    }

    protected static int IndexOf(StringBuilder s, string marker, int start)
    {
        int last = s.Length - marker.Length;
        for (int i = start; i <= last; i++)
        {
            if (s[i] != marker[0]) continue;
            int j = 1;
            while (j < marker.Length && s[i + j] == marker[j]) j++;
            if (j == marker.Length) return i;
        }
        return -1;
    }
}

/// <summary>
/// Trims the whitespace that templates put around reasoning blocks and tool calls, as a stream: leading whitespace
/// of a segment is dropped, trailing whitespace is held until more text follows it (and dropped at the segment's end).
/// </summary>
internal sealed class TrimmedStream(OutputEventKind kind)
{
    private readonly StringBuilder _ws = new();
    private bool _started;

    public void Add(string text, List<OutputEvent> events)
    {
        int i = 0;
        if (!_started)
        {
            while (i < text.Length && char.IsWhiteSpace(text[i])) i++;
            if (i == text.Length) return;
            _started = true;
        }
        int end = text.Length;
        while (end > i && char.IsWhiteSpace(text[end - 1])) end--;
        if (end > i)
        {
            string s = _ws.ToString() + text[i..end];
            _ws.Clear();
            events.Add(new OutputEvent(kind, s));
        }
        _ws.Append(text, end, text.Length - end);
    }

    /// <summary>The segment ended: drop held whitespace; the next text starts a new segment.</summary>
    public void EndSegment() { _ws.Clear(); _started = false; }
}
