namespace LlmArch.Generation.Constraints;

/// <summary>
/// An incremental JSON recognizer over bytes, driven by a compiled schema: a stack of frames (value, object, array,
/// string, number, literal set), one byte at a time. Every prefix it accepts can still be completed (keys that could
/// only end as a used or unknown name, a '}' before the required properties, a ',' past maxItems are refused at the
/// byte), so a mask built from it never leads the model into a dead end. Changes are logged so a walk over a token
/// trie can try a byte and roll back (<see cref="Mark"/>/<see cref="Rollback"/>) without copying the stack.
/// Whitespace between tokens is bounded as in llama.cpp's JSON grammar: one space, or a newline and at most 20 spaces
/// or tabs of indentation, so a model cannot pad forever.
/// </summary>
internal sealed class JsonAutomaton
{
    public const int MaxIndent = 20, MaxDepth = 64, MaxNumberBytes = 40;

    private enum Kind : byte { Value, Object, Array, String, Number, Literal }
    // Object phases
    private const byte OOpen = 0, OColon = 1, OValue = 2, OAfter = 3, OComma = 4;
    // Array phases
    private const byte AOpen = 0, AValue = 1, AAfter = 2, AComma = 3;
    // Number phases
    private const byte NMinus = 0, NZero = 1, NInt = 2, NDot = 3, NFrac = 4, NExp = 5, NExpSign = 6, NExpDigits = 7;

    private struct Frame
    {
        public int Node;
        public Kind Kind;
        public byte Phase;
        public byte Utf8;
        public byte Esc;
        public bool IsKey;
        public bool Integer;
        public int Count;
        public int Lo, Hi, Pos;
        public int Table; // literal frame: -1 = the node's Literals, else an index into the keyword tables
        public int Prop;
        public ulong Used;
    }

    public readonly record struct MarkState(int Log, int Depth, int Ws);

    private static readonly byte[][][] Keywords = [["true"u8.ToArray()], ["false"u8.ToArray()], ["null"u8.ToArray()]];

    private readonly List<SchemaNode> _nodes;
    private Frame[] _stack = new Frame[16];
    private int _depth;
    private int _ws;
    private (int Index, Frame Old)[] _log = new (int, Frame)[64];
    private int _logCount;

    public JsonAutomaton(JsonSchemaGrammar grammar)
    {
        _nodes = grammar.Nodes;
        _stack[0] = new Frame { Node = grammar.Root, Kind = Kind.Value };
        _depth = 1;
    }

    /// <summary>The top-level value is complete.</summary>
    public bool IsDone => _depth == 0;

    /// <summary>The input may end here (complete, or a top-level number / literal that needs no more bytes).</summary>
    public bool CanEnd
    {
        get
        {
            if (_depth == 0) return true;
            if (_depth != 1) return false;
            ref var f = ref _stack[0];
            return f.Kind switch
            {
                Kind.Number => f.Phase is NZero or NInt or NFrac or NExpDigits,
                Kind.Literal => Literals(f)[f.Lo].Length == f.Pos,
                _ => false,
            };
        }
    }

    /// <summary>
    /// True when the top is a string that takes any content (no known-key matching, no length limit, not mid-escape);
    /// <paramref name="utf8"/> is its decoder state. Then every plain-content token is allowed without a walk.
    /// </summary>
    public bool InFreeString(out int utf8)
    {
        utf8 = 0;
        if (_depth == 0) return false;
        ref var f = ref _stack[_depth - 1];
        if (f.Kind != Kind.String || f.Esc != 0) return false;
        var n = _nodes[f.Node];
        if (f.IsKey ? n.PropKeys.Length > 0 : n.MaxLength != int.MaxValue) return false;
        utf8 = f.Utf8;
        return true;
    }

    public MarkState Mark() => new(_logCount, _depth, _ws);

    public void Rollback(MarkState m)
    {
        while (_logCount > m.Log) { var (i, old) = _log[--_logCount]; _stack[i] = old; }
        _depth = m.Depth; _ws = m.Ws;
    }

    /// <summary>Forgets the undo log (after a real step: no mark can be rolled back to anymore).</summary>
    public void Commit() => _logCount = 0;

    private ref Frame Edit(int i)
    {
        if (_logCount == _log.Length) Array.Resize(ref _log, _log.Length * 2);
        _log[_logCount++] = (i, _stack[i]);
        return ref _stack[i];
    }

    private bool Push(Frame f)
    {
        if (_depth >= MaxDepth) return false;
        if (_depth == _stack.Length) Array.Resize(ref _stack, _stack.Length * 2);
        Edit(_depth) = f;
        _depth++;
        return true;
    }

    private byte[][] Literals(in Frame f) => f.Table >= 0 ? Keywords[f.Table] : _nodes[f.Node].Literals!;

    private static bool IsWs(byte b) => b is (byte)' ' or (byte)'\n' or (byte)'\r' or (byte)'\t';

    /// <summary>Consumes one byte; false when it cannot continue a valid document (the state is then undefined: roll back).</summary>
    public bool Step(byte b)
    {
        if (IsWs(b))
        {
            // Whitespace inside strings is content; elsewhere it is padding: _ws is 0 (none yet), 1 (after a space:
            // no more), 2 + k (after a newline and k spaces/tabs).
            if (_depth > 0 && _stack[_depth - 1].Kind == Kind.String) { }
            else if (_ws == 0 && b == (byte)' ') _ws = 1;
            else if (_ws == 0 && b == (byte)'\n') _ws = 2;
            else if (_ws >= 2 && _ws < 2 + MaxIndent && b is (byte)' ' or (byte)'\t') _ws++;
            else return false;
        }
        else _ws = 0;
        while (true)
        {
            if (_depth == 0) return false; // nothing may follow the complete value
            int top = _depth - 1;
            switch (_stack[top].Kind)
            {
                case Kind.Value:
                    return StartValue(top, b);
                case Kind.Object:
                {
                    ref var f = ref _stack[top];
                    var n = _nodes[f.Node];
                    if (IsWs(b)) return f.Phase != OValue; // OValue never stays on top (a value frame is pushed)
                    switch (f.Phase)
                    {
                        case OOpen or OComma:
                            if (b == (byte)'"' && CanAddKey(n, f.Used))
                            {
                                Edit(top).Phase = OColon;
                                return Push(new Frame { Node = f.Node, Kind = Kind.String, IsKey = true, Lo = 0, Hi = n.PropKeys.Length, Prop = -1 });
                            }
                            if (b == (byte)'}' && f.Phase == OOpen && (f.Used & n.Required) == n.Required) { _depth--; return Completed(); }
                            return false;
                        case OColon:
                            if (b != (byte)':') return false;
                            Edit(top).Phase = OAfter;
                            return Push(new Frame { Node = f.Prop >= 0 ? n.PropNodes[f.Prop] : n.Additional, Kind = Kind.Value });
                        case OAfter:
                            if (b == (byte)',' && CanAddKey(n, f.Used)) { Edit(top).Phase = OComma; return true; }
                            if (b == (byte)'}' && (f.Used & n.Required) == n.Required) { _depth--; return Completed(); }
                            return false;
                    }
                    return false;
                }
                case Kind.Array:
                {
                    ref var f = ref _stack[top];
                    var n = _nodes[f.Node];
                    if (IsWs(b)) return true;
                    switch (f.Phase)
                    {
                        case AOpen or AComma:
                            if (b == (byte)']' && f.Phase == AOpen && n.MinItems == 0) { _depth--; return Completed(); }
                            if (f.Count >= n.MaxItems) return false;
                            ref var e = ref Edit(top);
                            e.Phase = AAfter; e.Count++;
                            if (!Push(new Frame { Node = n.Items, Kind = Kind.Value })) return false;
                            continue; // the byte starts the item
                        case AAfter:
                            if (b == (byte)',' && f.Count < n.MaxItems) { Edit(top).Phase = AComma; return true; }
                            if (b == (byte)']' && f.Count >= n.MinItems) { _depth--; return Completed(); }
                            return false;
                    }
                    return false;
                }
                case Kind.String:
                    return StringByte(top, b);
                case Kind.Number:
                {
                    int r = NumberByte(top, b);
                    if (r >= 0) return r == 1;
                    _depth--; // the number ended before this byte: its container takes the byte
                    if (!Completed()) return false;
                    continue;
                }
                case Kind.Literal:
                {
                    ref var f = ref _stack[top];
                    var lits = Literals(f);
                    int lo = f.Lo, hi = f.Hi;
                    while (lo < hi && (lits[lo].Length <= f.Pos || lits[lo][f.Pos] != b)) lo++;
                    int h2 = lo;
                    while (h2 < hi && lits[h2].Length > f.Pos && lits[h2][f.Pos] == b) h2++;
                    if (lo == h2)
                    {
                        if (lits[f.Lo].Length != f.Pos) return false;
                        _depth--; // an exact match ended before this byte
                        if (!Completed()) return false;
                        continue;
                    }
                    ref var e = ref Edit(top);
                    e.Lo = lo; e.Hi = h2; e.Pos++;
                    if (h2 - lo == 1 && lits[lo].Length == e.Pos) { _depth--; return Completed(); }
                    return true;
                }
            }
            return false;
        }
    }

    private static bool CanAddKey(SchemaNode n, ulong used) =>
        n.Additional != JsonSchemaGrammar.NoNode || (n.PropKeys.Length > 0 && used != (n.PropKeys.Length == 64 ? ulong.MaxValue : (1UL << n.PropKeys.Length) - 1));

    /// <summary>A value frame at <paramref name="top"/> sees its first byte: it becomes the frame of that value's kind.</summary>
    private bool StartValue(int top, byte b)
    {
        if (IsWs(b)) return true;
        int node = _stack[top].Node;
        var n = _nodes[node];
        if (n.Literals is { } lits)
        {
            int lo = 0;
            while (lo < lits.Length && lits[lo][0] != b) lo++;
            int hi = lo;
            while (hi < lits.Length && lits[hi][0] == b) hi++;
            if (lo == hi) return false;
            Edit(top) = new Frame { Node = node, Kind = Kind.Literal, Lo = lo, Hi = hi, Pos = 1, Table = -1 };
            if (hi - lo == 1 && lits[lo].Length == 1) { _depth--; return Completed(); }
            return true;
        }
        var t = n.Types;
        switch (b)
        {
            case (byte)'{' when (t & JsonTypes.Object) != 0:
                Edit(top) = new Frame { Node = n.ObjectFrom >= 0 ? n.ObjectFrom : node, Kind = Kind.Object, Phase = OOpen };
                return true;
            case (byte)'[' when (t & JsonTypes.Array) != 0:
                Edit(top) = new Frame { Node = n.ArrayFrom >= 0 ? n.ArrayFrom : node, Kind = Kind.Array, Phase = AOpen };
                return true;
            case (byte)'"' when (t & JsonTypes.String) != 0:
                Edit(top) = new Frame { Node = n.StringFrom >= 0 ? n.StringFrom : node, Kind = Kind.String };
                return true;
            case (byte)'t' when (t & JsonTypes.Boolean) != 0:
                Edit(top) = new Frame { Node = node, Kind = Kind.Literal, Table = 0, Lo = 0, Hi = 1, Pos = 1 };
                return true;
            case (byte)'f' when (t & JsonTypes.Boolean) != 0:
                Edit(top) = new Frame { Node = node, Kind = Kind.Literal, Table = 1, Lo = 0, Hi = 1, Pos = 1 };
                return true;
            case (byte)'n' when (t & JsonTypes.Null) != 0:
                Edit(top) = new Frame { Node = node, Kind = Kind.Literal, Table = 2, Lo = 0, Hi = 1, Pos = 1 };
                return true;
        }
        if ((t & (JsonTypes.Number | JsonTypes.Integer)) != 0 && (b == (byte)'-' || (b >= (byte)'0' && b <= (byte)'9')))
        {
            Edit(top) = new Frame
            {
                Node = node, Kind = Kind.Number, Integer = (t & JsonTypes.Number) == 0, Count = 1,
                Phase = b == (byte)'-' ? NMinus : b == (byte)'0' ? NZero : NInt,
            };
            return true;
        }
        return false;
    }

    /// <summary>The frame just popped completed its value: the container moves on.</summary>
    private bool Completed()
    {
        if (_depth == 0) return true;
        int top = _depth - 1;
        ref var f = ref _stack[top];
        // Objects and arrays already moved to their "after" phase when they pushed the child.
        return f.Kind is Kind.Object or Kind.Array;
    }

    /// <returns>1 consumed, 0 rejected, -1 the number ended before this byte.</returns>
    private int NumberByte(int top, byte b)
    {
        ref var f = ref _stack[top];
        bool digit = b >= (byte)'0' && b <= (byte)'9';
        if (f.Count >= MaxNumberBytes && (digit || b is (byte)'.' or (byte)'e' or (byte)'E' or (byte)'+' or (byte)'-'))
            return f.Phase is NZero or NInt or NFrac or NExpDigits ? -1 : 0;
        byte next;
        switch (f.Phase)
        {
            case NMinus: if (!digit) return 0; next = b == (byte)'0' ? NZero : NInt; break;
            case NZero or NInt:
                if (digit && f.Phase == NInt) { next = NInt; break; }
                if (b == (byte)'.' && !f.Integer) { next = NDot; break; }
                if ((b == (byte)'e' || b == (byte)'E') && !f.Integer) { next = NExp; break; }
                return digit ? 0 : -1; // "01" is not JSON
            case NDot: if (!digit) return 0; next = NFrac; break;
            case NFrac:
                if (digit) { next = NFrac; break; }
                if (b == (byte)'e' || b == (byte)'E') { next = NExp; break; }
                return -1;
            case NExp:
                if (b == (byte)'+' || b == (byte)'-') { next = NExpSign; break; }
                if (!digit) return 0; next = NExpDigits; break;
            case NExpSign: if (!digit) return 0; next = NExpDigits; break;
            default: if (digit) { next = NExpDigits; break; } return -1;
        }
        ref var e = ref Edit(top);
        e.Phase = next; e.Count++;
        return 1;
    }

    private bool StringByte(int top, byte b)
    {
        ref var f = ref _stack[top];
        var n = _nodes[f.Node];
        if (f.Esc == 1)
        {
            if (b == (byte)'u') { ref var e0 = ref Edit(top); e0.Esc = 2; return KeyByte(top, b); }
            if (b is not ((byte)'"' or (byte)'\\' or (byte)'/' or (byte)'b' or (byte)'f' or (byte)'n' or (byte)'r' or (byte)'t')) return false;
            ref var e = ref Edit(top); e.Esc = 0; e.Count++;
            return KeyByte(top, b);
        }
        if (f.Esc >= 2)
        {
            if (!Uri.IsHexDigit((char)b)) return false;
            ref var e = ref Edit(top);
            if (e.Esc == 5) { e.Esc = 0; e.Count++; } else e.Esc++;
            return KeyByte(top, b);
        }
        if (b == (byte)'"')
        {
            if (f.Utf8 != 0) return false;
            if (!f.IsKey)
            {
                if (f.Count < n.MinLength) return false;
                _depth--;
                return Completed();
            }
            // Key: an exact known name (unused), or any other name when additional properties are allowed.
            int prop = -1;
            if (f.Lo < f.Hi && n.PropKeys[f.Lo].Length == f.Pos) prop = f.Lo;
            if (f.Pos < 0) prop = -1;
            ref var parent = ref _stack[top - 1];
            if (prop >= 0)
            {
                if ((parent.Used & (1UL << prop)) != 0) return false;
            }
            else if (n.Additional == JsonSchemaGrammar.NoNode) return false;
            _depth--;
            ref var p = ref Edit(top - 1);
            p.Prop = prop;
            if (prop >= 0) p.Used |= 1UL << prop;
            return true;
        }
        if (b < 0x20) return false;
        if (b == (byte)'\\')
        {
            if (f.Utf8 != 0) return false;
            if (!f.IsKey && f.Count >= n.MaxLength) return false;
            Edit(top).Esc = 1;
            return KeyByte(top, b);
        }
        int s = Utf8Dfa.Step(f.Utf8, b);
        if (s < 0) return false;
        if (f.Utf8 == 0 && !f.IsKey && f.Count >= n.MaxLength) return false;
        ref var ed = ref Edit(top);
        ed.Utf8 = (byte)s;
        if (s == 0) ed.Count++;
        return KeyByte(top, b);
    }

    /// <summary>For a key, narrows the known names that the key's bytes still match (Pos = -1 once none does).</summary>
    private bool KeyByte(int top, byte b)
    {
        ref var f = ref _stack[top];
        if (!f.IsKey) return true;
        var n = _nodes[f.Node];
        if (f.Pos < 0) return true; // already an additional (unknown) name
        var keys = n.PropKeys;
        int lo = f.Lo, hi = f.Hi, pos = f.Pos;
        while (lo < hi && (keys[lo].Length <= pos || keys[lo][pos] != b)) lo++;
        int h2 = lo;
        while (h2 < hi && keys[h2].Length > pos && keys[h2][pos] == b) h2++;
        // Live only if an unused name remains reachable, or unknown names are allowed.
        ulong used = _stack[top - 1].Used;
        bool live = false;
        for (int i = lo; i < h2 && !live; i++) live = (used & (1UL << i)) == 0;
        ref var e = ref Edit(top);
        if (!live)
        {
            if (n.Additional == JsonSchemaGrammar.NoNode) return false;
            e.Pos = -1; e.Lo = e.Hi = 0;
            return true;
        }
        e.Lo = lo; e.Hi = h2; e.Pos = pos + 1;
        return true;
    }
}
