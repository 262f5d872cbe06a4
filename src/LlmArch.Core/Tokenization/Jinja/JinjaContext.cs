namespace LlmArch.Tokenization.Jinja;

/// <summary>Variable scopes of one render: globals, the template's top level, and nested for-loop/macro frames.</summary>
internal sealed class JinjaContext
{
    internal sealed class Frame(Frame? parent)
    {
        public readonly Frame? Parent = parent;
        public readonly Dictionary<string, object?> Vars = new(StringComparer.Ordinal);
    }

    public Frame Current { get; private set; }
    public int Line { get; set; }
    /// <summary>Steps taken so far (the instruction budget, <see cref="JinjaLimits.MaxSteps"/>).</summary>
    public long Steps;
    /// <summary>Expressions being evaluated, one inside another (<see cref="JinjaLimits.MaxExpressionDepth"/>).</summary>
    public int ExprDepth;
    /// <summary>Macro calls in progress.</summary>
    public int CallDepth;
    /// <summary>Characters and list items built so far (<see cref="JinjaLimits.MaxAllocation"/>).</summary>
    public long Allocated;

    /// <summary>One step of the budget.</summary>
    public void Tick()
    {
        if (++Steps > JinjaLimits.MaxSteps)
            throw new JinjaError($"the template ran over its budget of {JinjaLimits.MaxSteps} steps (an endless or enormous loop?)");
    }

    public JinjaContext(Dictionary<string, object?> globals)
    {
        var g = new Frame(null);
        foreach (var (k, v) in globals) g.Vars[k] = v;
        Current = new Frame(g);
    }

    public object? Lookup(string name)
    {
        for (var f = Current; f is not null; f = f.Parent)
            if (f.Vars.TryGetValue(name, out var v)) return v;
        return new JinjaUndefined(name);
    }

    public void Set(string name, object? value) => Current.Vars[name] = value;

    /// <summary>Runs <paramref name="body"/> in a new frame whose parent is <paramref name="parent"/> (default: current).</summary>
    public T InFrame<T>(Func<T> body, Frame? parent = null)
    {
        var saved = Current;
        Current = new Frame(parent ?? saved);
        try { return body(); }
        finally { Current = saved; }
    }
}
