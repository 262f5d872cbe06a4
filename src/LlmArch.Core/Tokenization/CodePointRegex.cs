using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace LlmArch.Tokenization;

/// <summary>
/// A .NET <see cref="Regex"/> that matches by code point the way the Oniguruma/Rust engines behind HF tokenizers do.
/// .NET matches UTF-16 units, so a supplementary character (emoji, CJK extension B, ...) would be two surrogates of
/// category Cs. Before matching, each such character is replaced by one BMP stand-in of the same general category
/// (never ASCII, never CJK) and match positions are mapped back.
/// Patterns come from model files, so they run safely: on .NET's non-backtracking engine (linear time, same matches)
/// when the pattern needs nothing it lacks, else (lookarounds, backreferences, atomic groups: the GPT-2 family's
/// <c>\s+(?!\S)</c>) on the backtracking engine under a per-match timeout, so catastrophic backtracking is an error,
/// not a hang.
/// </summary>
internal sealed class CodePointRegex
{
    /// <summary>Longest one match may run on the backtracking engine.</summary>
    public static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(2);

    /// <summary>Longest pattern accepted (real pre-tokenizer patterns are under 300 characters).</summary>
    public const int MaxPatternLength = 16384;

    private readonly Regex _regex;
    private readonly string _where;

    public CodePointRegex(string pattern, string where)
    {
        _where = where;
        if (pattern.Length > MaxPatternLength)
            throw new ConfigException($"{where}: regex of {pattern.Length} characters is longer than the {MaxPatternLength} limit");
        try
        {
            _regex = new Regex(pattern, RegexOptions.NonBacktracking | RegexOptions.CultureInvariant);
        }
        catch (NotSupportedException)
        {
            try { _regex = new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant, MatchTimeout); }
            catch (ArgumentException e) { throw new ConfigException($"{where}: regex '{pattern}' is not supported: {e.Message}"); }
        }
        catch (ArgumentException e)
        {
            throw new ConfigException($"{where}: regex '{pattern}' is not supported: {e.Message}");
        }
    }

    /// <summary>True when the pattern runs on the linear-time engine.</summary>
    public bool IsLinear => (_regex.Options & RegexOptions.NonBacktracking) != 0;

    /// <summary>Matches as (start, length) pairs in UTF-16 units of <paramref name="s"/>; a match that times out is an input error.</summary>
    public void Matches(string s, List<(int Start, int Length)> dst)
    {
        try { MatchesCore(s, dst); }
        catch (RegexMatchTimeoutException)
        {
            throw new LlmArchInputException($"{_where}: regex '{_regex}' took over {MatchTimeout.TotalSeconds:0} s on one piece of a {s.Length}-character input (catastrophic backtracking); the tokenizer's pattern cannot be used");
        }
    }

    private void MatchesCore(string s, List<(int Start, int Length)> dst)
    {
        dst.Clear();
        if (!HasSurrogates(s))
        {
            foreach (var m in _regex.EnumerateMatches(s)) if (m.Length > 0) dst.Add((m.Index, m.Length));
            return;
        }
        // Map to one char per code point; map[i] = start of code point i in s (map[n] = s.Length).
        var sb = new StringBuilder(s.Length);
        var map = new List<int>(s.Length + 1);
        for (int i = 0; i < s.Length; i++)
        {
            map.Add(i);
            char c = s[i];
            if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                sb.Append(StandIn(CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(c, s[i + 1]))));
                i++;
            }
            else sb.Append(c);
        }
        map.Add(s.Length);
        string mapped = sb.ToString();
        foreach (var m in _regex.EnumerateMatches(mapped))
        {
            if (m.Length == 0) continue;
            int a = map[m.Index], b = map[m.Index + m.Length];
            dst.Add((a, b - a));
        }
    }

    private static bool HasSurrogates(string s)
    {
        foreach (char c in s) if (char.IsSurrogate(c)) return true;
        return false;
    }

    /// <summary>A BMP character of the given category, chosen outside ASCII and the CJK/kana ranges patterns name.</summary>
    private static char StandIn(UnicodeCategory cat) => cat switch
    {
        UnicodeCategory.UppercaseLetter => '\u00C0',
        UnicodeCategory.LowercaseLetter => '\u00DF',
        UnicodeCategory.TitlecaseLetter => '\u01C5',
        UnicodeCategory.ModifierLetter => '\u02B0',
        UnicodeCategory.OtherLetter => '\u01BB',
        UnicodeCategory.NonSpacingMark => '\u0300',
        UnicodeCategory.SpacingCombiningMark => '\u0903',
        UnicodeCategory.EnclosingMark => '\u20DD',
        UnicodeCategory.DecimalDigitNumber => '\u0660',
        UnicodeCategory.LetterNumber => '\u2160',
        UnicodeCategory.OtherNumber => '\u00B2',
        UnicodeCategory.ConnectorPunctuation => '\u203F',
        UnicodeCategory.DashPunctuation => '\u2010',
        UnicodeCategory.OpenPunctuation => '\u0F3A',
        UnicodeCategory.ClosePunctuation => '\u0F3B',
        UnicodeCategory.InitialQuotePunctuation => '\u00AB',
        UnicodeCategory.FinalQuotePunctuation => '\u00BB',
        UnicodeCategory.OtherPunctuation => '\u00A1',
        UnicodeCategory.MathSymbol => '\u00AC',
        UnicodeCategory.CurrencySymbol => '\u00A2',
        UnicodeCategory.ModifierSymbol => '\u00B4',
        UnicodeCategory.OtherSymbol => '\u00A6',
        UnicodeCategory.Format => '\u00AD',
        UnicodeCategory.PrivateUse => '\uE000',
        _ => '\u0378', // unassigned
    };
}
