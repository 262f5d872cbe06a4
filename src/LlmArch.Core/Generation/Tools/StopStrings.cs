using System.Text;

namespace LlmArch.Generation.Tools;

/// <summary>
/// Text stop sequences over a stream: passes text through, holding back any tail that might be the start of a stop
/// string, and reports the first match (the text before it passes, the stop string and what follows do not).
/// </summary>
public sealed class StopStrings(IReadOnlyList<string>? stops)
{
    private readonly string[] _stops = stops?.Where(s => s.Length > 0).ToArray() ?? [];
    private readonly StringBuilder _held = new();

    public bool Matched { get; private set; }

    /// <summary>Adds text; returns what may be passed on now.</summary>
    public string Push(string text)
    {
        if (Matched) return "";
        if (_stops.Length == 0) return text;
        _held.Append(text);
        string s = _held.ToString();
        int best = -1;
        foreach (var st in _stops)
        {
            int i = s.IndexOf(st, StringComparison.Ordinal);
            if (i >= 0 && (best < 0 || i < best)) best = i;
        }
        if (best >= 0)
        {
            Matched = true;
            _held.Clear();
            return s[..best];
        }
        int keep = 0;
        foreach (var st in _stops)
            for (int k = Math.Min(st.Length - 1, s.Length); k > keep; k--)
                if (string.CompareOrdinal(s, s.Length - k, st, 0, k) == 0) { keep = k; break; }
        _held.Remove(0, s.Length - keep);
        return s[..^keep];
    }

    /// <summary>The stream ended without a match: releases the held tail.</summary>
    public string Flush()
    {
        string s = _held.ToString();
        _held.Clear();
        return Matched ? "" : s;
    }
}
