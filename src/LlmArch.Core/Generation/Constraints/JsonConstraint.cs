using System.Numerics;

namespace LlmArch.Generation.Constraints;

/// <summary>
/// Constrains generation to one JSON value of a schema (or any JSON object), over the real vocabulary. Each step's
/// mask is computed by walking the token trie with the automaton (rejected prefixes skip their whole subtree); inside a
/// string that takes any content the plain-content tokens come from a precomputed set for the decoder state, and only
/// tokens holding a quote, a backslash or a control byte are walked. Special tokens are never allowed, except the
/// end tokens once the value may end. Complete when the value is closed.
/// </summary>
public sealed class JsonConstraint : ITokenConstraint
{
    private readonly TokenVocabulary _vocab;
    private readonly JsonAutomaton _auto;
    private readonly int[] _endTokens;
    private readonly ulong[] _allowed;
    private JsonAutomaton.MarkState[] _marks;
    private bool _ended;

    /// <param name="endTokens">tokens that may end the output where the value may end (eos / end of turn).</param>
    public JsonConstraint(TokenVocabulary vocab, JsonSchemaGrammar grammar, IEnumerable<int>? endTokens = null)
    {
        _vocab = vocab;
        _auto = new JsonAutomaton(grammar);
        _endTokens = endTokens?.Where(t => (uint)t < (uint)vocab.Size).ToArray() ?? [];
        _allowed = new ulong[vocab.Words];
        _marks = new JsonAutomaton.MarkState[Math.Max(vocab.Full.MaxDepth, vocab.Unsafe.MaxDepth) + 2];
    }

    public bool IsComplete => _ended || _auto.IsDone;

    /// <summary>The model chose a token the mask forbade (only possible when every token was forbidden).</summary>
    public bool Failed { get; private set; }

    /// <summary>Computes which tokens may come next (a bit per id); exposed for tests and benchmarks.</summary>
    public ReadOnlySpan<ulong> Allowed()
    {
        Array.Clear(_allowed);
        if (_auto.InFreeString(out int utf8))
        {
            _vocab.SafeFrom[utf8].CopyTo(_allowed, 0);
            Walk(_vocab.Unsafe);
        }
        else Walk(_vocab.Full);
        if (_auto.CanEnd) foreach (int t in _endTokens) _allowed[t >> 6] |= 1UL << (t & 63);
        return _allowed;
    }

    private void Walk(Trie trie)
    {
        var label = trie.Label; var depth = trie.Depth; var skip = trie.Skip; var tokStart = trie.TokStart; var tokIds = trie.TokIds;
        var marks = _marks;
        marks[0] = _auto.Mark();
        int n = trie.Count;
        for (int i = 0; i < n;)
        {
            int d = depth[i];
            _auto.Rollback(marks[d - 1]);
            if (!_auto.Step(label[i])) { i = skip[i]; continue; }
            marks[d] = _auto.Mark();
            for (int k = tokStart[i]; k < tokStart[i + 1]; k++) { int id = tokIds[k]; _allowed[id >> 6] |= 1UL << (id & 63); }
            i++;
        }
        _auto.Rollback(marks[0]);
        _auto.Commit();
    }

    public void Mask(Span<float> logits)
    {
        var allowed = Allowed();
        bool any = false;
        foreach (ulong w in allowed) if (w != 0) { any = true; break; }
        if (!any) foreach (int t in _endTokens) _allowed[t >> 6] |= 1UL << (t & 63); // cannot happen for a valid schema: end rather than emit garbage
        Apply(_allowed, logits);
    }

    /// <summary>Sets every logit whose bit is clear to -infinity.</summary>
    public static void Apply(ReadOnlySpan<ulong> allowed, Span<float> logits)
    {
        int V = logits.Length;
        for (int w = 0; w < allowed.Length; w++)
        {
            ulong bits = allowed[w];
            int start = w << 6;
            if (start >= V) break;
            int len = Math.Min(64, V - start);
            if (bits == ulong.MaxValue && len == 64) continue;
            if (bits == 0) { logits.Slice(start, len).Fill(float.NegativeInfinity); continue; }
            ulong forbidden = ~bits;
            if (len < 64) forbidden &= (1UL << len) - 1;
            while (forbidden != 0)
            {
                int b = BitOperations.TrailingZeroCount(forbidden);
                logits[start + b] = float.NegativeInfinity;
                forbidden &= forbidden - 1;
            }
        }
    }

    public void Accept(int token)
    {
        if (Array.IndexOf(_endTokens, token) >= 0 && _auto.CanEnd) { _ended = true; return; }
        var bytes = (uint)token < (uint)_vocab.Size ? _vocab.Bytes[token] : null;
        var m = _auto.Mark();
        bool ok = bytes is { Length: > 0 };
        if (ok) foreach (byte b in bytes!) if (!_auto.Step(b)) { ok = false; break; }
        if (!ok) { _auto.Rollback(m); Failed = true; _ended = true; }
        _auto.Commit();
    }
}

/// <summary>Forbids the ids past the tokenizer's vocabulary (checkpoints pad their embedding tables; those rows are never text).</summary>
public sealed class VocabularyLimit(int tokenizerVocab, ITokenConstraint? inner = null) : ITokenConstraint
{
    public void Mask(Span<float> logits)
    {
        if (logits.Length > tokenizerVocab) logits[tokenizerVocab..].Fill(float.NegativeInfinity);
        inner?.Mask(logits);
    }
    public void Accept(int token) => inner?.Accept(token);
    public bool IsComplete => inner?.IsComplete ?? false;
}

/// <summary>
/// Forces a fixed token sequence, then hands over to <paramref name="inner"/> (e.g. gpt-oss's
/// <c>&lt;|channel|&gt;final&lt;|message|&gt;</c> before a JSON answer, or a tool call's opening markup).
/// </summary>
public sealed class ForcedPrefix(int[] prefix, ITokenConstraint inner) : ITokenConstraint
{
    private int _pos;
    public void Mask(Span<float> logits)
    {
        if (_pos >= prefix.Length) { inner.Mask(logits); return; }
        int keep = prefix[_pos];
        float v = logits[keep];
        logits.Fill(float.NegativeInfinity);
        logits[keep] = float.IsNegativeInfinity(v) ? 0 : v;
    }
    public void Accept(int token) { if (_pos < prefix.Length) _pos++; else inner.Accept(token); }
    public bool IsComplete => _pos >= prefix.Length && inner.IsComplete;
}

/// <summary>
/// Lets a reasoning model think before the constrained answer: while a reasoning block is open every token is allowed;
/// at the start the model may open one (<paramref name="openToken"/>) or begin the answer; after the closing token
/// the inner constraint applies.
/// </summary>
public sealed class ReasoningGate(ITokenConstraint inner, int openToken, int closeToken, bool startOpen) : ITokenConstraint
{
    private int _state = startOpen ? 1 : 0; // 0 start, 1 reasoning, 2 answer

    public void Mask(Span<float> logits)
    {
        if (_state == 1) return;
        if (_state == 0 && openToken >= 0)
        {
            float open = logits[openToken];
            inner.Mask(logits);
            logits[openToken] = open;
            return;
        }
        inner.Mask(logits);
    }

    public void Accept(int token)
    {
        if (_state == 1) { if (token == closeToken) _state = 2; return; }
        if (_state == 0 && token == openToken) { _state = 1; return; }
        _state = 2;
        inner.Accept(token);
    }

    public bool IsComplete => _state == 2 && inner.IsComplete;
}
