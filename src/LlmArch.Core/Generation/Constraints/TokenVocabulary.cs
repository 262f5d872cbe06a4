using System.Runtime.CompilerServices;
using System.Text;
using LlmArch.Tokenization;

namespace LlmArch.Generation.Constraints;

/// <summary>
/// The bytes each token id stands for, computed once per tokenizer, and the structures the token mask is computed
/// with: a byte trie over all tokens (flattened in preorder with subtree skips, so a walk is a linear scan that jumps
/// over rejected subtrees) and one over the tokens a JSON string cannot take as plain content, plus, per UTF-8
/// decoder state, the set of tokens that are plain string content from that state.
/// </summary>
public sealed class TokenVocabulary
{
    private static readonly ConditionalWeakTable<Tokenizer, Dictionary<int, TokenVocabulary>> Cache = new();

    /// <summary>Length of the logits row (the model's vocabulary, which may exceed the tokenizer's).</summary>
    public int Size { get; }
    /// <summary>Bytes of each id; null for special tokens and ids the tokenizer does not define (never allowed under a constraint).</summary>
    public byte[]?[] Bytes { get; }
    internal Trie Full { get; }
    /// <summary>Tokens containing a quote, a backslash or a control byte.</summary>
    internal Trie Unsafe { get; }
    /// <summary>[utf8 state][word]: tokens that are plain string content when a string is at that decoder state.</summary>
    internal ulong[][] SafeFrom { get; }
    internal int Words => (Size + 63) >> 6;
    /// <summary>Nodes of the trie over all tokens, and of the one over tokens that are not plain string content.</summary>
    public (int All, int NotPlain) TrieNodes => (Full.Count, Unsafe.Count);

    private TokenVocabulary(byte[]?[] bytes, int size)
    {
        Size = size;
        Bytes = bytes;
        Full = Trie.Build(bytes, _ => true);
        Unsafe = Trie.Build(bytes, b => b.Any(x => x < 0x20 || x == (byte)'"' || x == (byte)'\\'));
        SafeFrom = new ulong[Utf8Dfa.States][];
        for (int s = 0; s < Utf8Dfa.States; s++) SafeFrom[s] = new ulong[Words];
        for (int id = 0; id < bytes.Length; id++)
        {
            var b = bytes[id];
            if (b is null || b.Length == 0 || b.Any(x => x < 0x20 || x == (byte)'"' || x == (byte)'\\')) continue;
            for (int s = 0; s < Utf8Dfa.States; s++)
            {
                int st = s;
                foreach (byte x in b) { st = Utf8Dfa.Step(st, x); if (st < 0) break; }
                if (st >= 0) SafeFrom[s][id >> 6] |= 1UL << (id & 63);
            }
        }
    }

    /// <summary>The vocabulary of <paramref name="tokenizer"/> for a model with <paramref name="modelVocab"/> logits (cached).</summary>
    public static TokenVocabulary For(Tokenizer tokenizer, int modelVocab)
    {
        var byVocab = Cache.GetOrCreateValue(tokenizer);
        lock (byVocab)
        {
            if (!byVocab.TryGetValue(modelVocab, out var v)) byVocab[modelVocab] = v = new TokenVocabulary(TokenBytes(tokenizer, modelVocab), modelVocab);
            return v;
        }
    }

    /// <summary>
    /// Bytes of every id: byte-level vocabularies map each character through the GPT-2 byte alphabet; SentencePiece-style
    /// ones read <c>&lt;0xNN&gt;</c> byte tokens and '▁' as a space; added (non-special) tokens are their text.
    /// </summary>
    public static byte[]?[] TokenBytes(Tokenizer tok, int modelVocab)
    {
        var result = new byte[]?[modelVocab];
        var added = new Dictionary<int, AddedToken>();
        foreach (var t in tok.AddedTokens) added[t.Id] = t;
        bool byteLevel = IsByteLevel(tok);
        int n = Math.Min(modelVocab, tok.VocabSize);
        for (int id = 0; id < n; id++)
        {
            string text;
            try { text = tok.IdToToken(id); } catch (LlmArchInputException) { continue; }
            if (added.TryGetValue(id, out var a))
            {
                if (!a.Special) result[id] = Encoding.UTF8.GetBytes(a.Content);
                continue;
            }
            result[id] = byteLevel ? FromByteLevel(text) : FromSentencePiece(text);
        }
        return result;
    }

    private static bool IsByteLevel(Tokenizer tok)
    {
        for (int b = 0; b < 256; b++)
            if (tok.TokenToId(ByteLevelAlphabet.ByteToChar[b].ToString()) is null) return false;
        return true;
    }

    private static byte[]? FromByteLevel(string text)
    {
        var r = new byte[text.Length];
        for (int i = 0; i < text.Length; i++)
        {
            int b = ByteLevelAlphabet.CharToByte(text[i]);
            if (b < 0) return null;
            r[i] = (byte)b;
        }
        return r;
    }

    private static byte[] FromSentencePiece(string text)
    {
        if (text.Length == 6 && text.StartsWith("<0x", StringComparison.Ordinal) && text[5] == '>'
            && byte.TryParse(text.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte bb))
            return [bb];
        return Encoding.UTF8.GetBytes(text.Replace('\u2581', ' '));
    }
}

/// <summary>A strict UTF-8 decoder as a small DFA (no overlongs, no surrogates, nothing above U+10FFFF). State 0 = at a character boundary.</summary>
internal static class Utf8Dfa
{
    public const int States = 8;

    /// <summary>The next state, or -1 when the byte cannot follow.</summary>
    public static int Step(int s, byte b) => s switch
    {
        0 => b < 0x80 ? 0 : b is >= 0xC2 and <= 0xDF ? 1 : b == 0xE0 ? 4 : b == 0xED ? 5 : b is >= 0xE1 and <= 0xEF ? 2
            : b == 0xF0 ? 6 : b is >= 0xF1 and <= 0xF3 ? 3 : b == 0xF4 ? 7 : -1,
        1 => b is >= 0x80 and <= 0xBF ? 0 : -1,
        2 => b is >= 0x80 and <= 0xBF ? 1 : -1,
        3 => b is >= 0x80 and <= 0xBF ? 2 : -1,
        4 => b is >= 0xA0 and <= 0xBF ? 1 : -1,
        5 => b is >= 0x80 and <= 0x9F ? 1 : -1,
        6 => b is >= 0x90 and <= 0xBF ? 2 : -1,
        7 => b is >= 0x80 and <= 0x8F ? 2 : -1,
        _ => -1,
    };
}

/// <summary>
/// A byte trie of token strings in preorder: node i has the byte on its incoming edge, its depth (1 = child of the
/// root), the index just past its subtree, and the ids of the tokens that end at it.
/// </summary>
internal sealed class Trie
{
    public byte[] Label = [];
    public int[] Depth = [];
    public int[] Skip = [];
    public int[] TokStart = [];
    public int[] TokIds = [];
    public int Count;
    public int MaxDepth;

    public static Trie Build(byte[]?[] bytes, Func<byte[], bool> include)
    {
        var ids = new List<int>();
        for (int i = 0; i < bytes.Length; i++) if (bytes[i] is { Length: > 0 } b && include(b)) ids.Add(i);
        ids.Sort((a, c) =>
        {
            int r = bytes[a].AsSpan().SequenceCompareTo(bytes[c]);
            return r != 0 ? r : a.CompareTo(c);
        });
        var label = new List<byte>(); var depth = new List<int>(); var tokOf = new List<int>();
        var path = new List<int>(); // node index at each depth-1
        byte[]? prev = null;
        var tokNode = new int[ids.Count];
        for (int k = 0; k < ids.Count; k++)
        {
            var b = bytes[ids[k]]!;
            int lcp = 0;
            if (prev is not null) { int m = Math.Min(prev.Length, b.Length); while (lcp < m && prev[lcp] == b[lcp]) lcp++; }
            if (path.Count > lcp) path.RemoveRange(lcp, path.Count - lcp);
            for (int d = lcp; d < b.Length; d++) { path.Add(label.Count); label.Add(b[d]); depth.Add(d + 1); }
            tokNode[k] = path[b.Length - 1];
            prev = b;
        }
        var t = new Trie { Count = label.Count, Label = label.ToArray(), Depth = depth.ToArray(), Skip = new int[label.Count], TokStart = new int[label.Count + 1] };
        // Subtree ends: the next node whose depth is not deeper.
        var stack = new Stack<int>();
        for (int i = 0; i < t.Count; i++)
        {
            while (stack.Count > 0 && t.Depth[stack.Peek()] >= t.Depth[i]) t.Skip[stack.Pop()] = i;
            stack.Push(i);
            t.MaxDepth = Math.Max(t.MaxDepth, t.Depth[i]);
        }
        while (stack.Count > 0) t.Skip[stack.Pop()] = t.Count;
        // Tokens grouped by node (end nodes are non-decreasing in sorted order).
        t.TokIds = new int[ids.Count];
        int p = 0;
        for (int i = 0; i < t.Count; i++)
        {
            t.TokStart[i] = p;
            while (p < ids.Count && tokNode[p] == i) { t.TokIds[p] = ids[p]; p++; }
        }
        t.TokStart[t.Count] = p;
        return t;
    }
}
