using System.Text;

namespace LlmArch.Tokenization.Jinja;

internal enum Flow { Normal, Break, Continue }

internal abstract class Stmt
{
    public int Line;
    public abstract Flow Exec(JinjaContext ctx, StringBuilder o);

    public static Flow ExecAll(List<Stmt> body, JinjaContext ctx, StringBuilder o)
    {
        foreach (var s in body)
        {
            ctx.Line = s.Line;
            ctx.Tick();
            var f = s.Exec(ctx, o);
            if (o.Length > JinjaLimits.MaxOutput)
                throw new JinjaError($"the output would be over {JinjaLimits.MaxOutput} characters, the sandbox limit");
            if (f != Flow.Normal) return f;
        }
        return Flow.Normal;
    }
}

internal sealed class TextStmt(string text) : Stmt
{
    public override Flow Exec(JinjaContext ctx, StringBuilder o) { o.Append(text); return Flow.Normal; }
}

internal sealed class OutputStmt(Expr e) : Stmt
{
    public override Flow Exec(JinjaContext ctx, StringBuilder o) { o.Append(Py.Str(e.Eval(ctx))); return Flow.Normal; }
}

internal sealed class IfStmt(List<(Expr Cond, List<Stmt> Body)> branches, List<Stmt>? elseBody) : Stmt
{
    public override Flow Exec(JinjaContext ctx, StringBuilder o)
    {
        foreach (var (cond, body) in branches)
            if (Py.Truthy(cond.Eval(ctx))) return ExecAll(body, ctx, o);
        return elseBody is null ? Flow.Normal : ExecAll(elseBody, ctx, o);
    }
}

internal sealed class BreakStmt(bool isBreak) : Stmt
{
    public override Flow Exec(JinjaContext ctx, StringBuilder o) => isBreak ? Flow.Break : Flow.Continue;
}

internal sealed class DoStmt(Expr e) : Stmt
{
    public override Flow Exec(JinjaContext ctx, StringBuilder o) { e.Eval(ctx); return Flow.Normal; }
}

/// <summary>Assignment target: a name, <c>ns.attr</c>, or a tuple of names.</summary>
internal sealed class Target
{
    public string? Name;
    public Expr? NamespaceObj;
    public string? Attr;
    public List<Target>? Tuple;

    public void Assign(JinjaContext ctx, object? value)
    {
        if (Tuple is not null)
        {
            var items = Py.Iterate(value);
            if (items.Count != Tuple.Count)
                throw new JinjaError($"cannot unpack {items.Count} values into {Tuple.Count} names");
            for (int i = 0; i < Tuple.Count; i++) Tuple[i].Assign(ctx, items[i]);
        }
        else if (NamespaceObj is not null)
        {
            if (NamespaceObj.Eval(ctx) is not JinjaNamespace ns)
                throw new JinjaError($"cannot assign attribute '{Attr}' on a non-namespace object");
            ns.Attrs[Attr!] = value;
        }
        else ctx.Set(Name!, value);
    }
}

internal sealed class SetStmt(Target target, Expr value) : Stmt
{
    public override Flow Exec(JinjaContext ctx, StringBuilder o) { target.Assign(ctx, value.Eval(ctx)); return Flow.Normal; }
}

internal sealed class SetBlockStmt(Target target, List<Stmt> body, List<FilterExpr.Call> filters) : Stmt
{
    public override Flow Exec(JinjaContext ctx, StringBuilder o)
    {
        var sb = new StringBuilder();
        ExecAll(body, ctx, sb);
        object? v = sb.ToString();
        foreach (var f in filters) v = f.Apply(ctx, v);
        target.Assign(ctx, v);
        return Flow.Normal;
    }
}

internal sealed class FilterBlockStmt(List<Stmt> body, List<FilterExpr.Call> filters) : Stmt
{
    public override Flow Exec(JinjaContext ctx, StringBuilder o)
    {
        var sb = new StringBuilder();
        ExecAll(body, ctx, sb);
        object? v = sb.ToString();
        foreach (var f in filters) v = f.Apply(ctx, v);
        o.Append(Py.Str(v));
        return Flow.Normal;
    }
}

internal sealed class ForStmt(Target target, Expr iter, Expr? filter, List<Stmt> body, List<Stmt>? elseBody) : Stmt
{
    public override Flow Exec(JinjaContext ctx, StringBuilder o)
    {
        var source = iter.Eval(ctx);
        if (source is null) throw new JinjaError("'NoneType' object is not iterable");
        var items = source is Dictionary<string, object?> d ? d.Keys.Cast<object?>().ToList() : Py.Iterate(source).ToList();
        return ctx.InFrame(() =>
        {
            if (filter is not null)
            {
                items = items.Where(x => { target.Assign(ctx, x); return Py.Truthy(filter.Eval(ctx)); }).ToList();
            }
            if (items.Count == 0) return elseBody is null ? Flow.Normal : ExecAll(elseBody, ctx, o);
            var loop = new LoopInfo(items);
            for (int i = 0; i < items.Count; i++)
            {
                ctx.Tick();
                loop.Index0 = i;
                ctx.Set("loop", loop);
                target.Assign(ctx, items[i]);
                if (ExecAll(body, ctx, o) == Flow.Break) break;
            }
            return Flow.Normal;
        });
    }
}

/// <summary>The <c>loop</c> variable of a for loop.</summary>
internal sealed class LoopInfo(List<object?> items)
{
    public int Index0;

    public object? Get(string name) => name switch
    {
        "index0" => (long)Index0,
        "index" => (long)Index0 + 1,
        "revindex" => (long)(items.Count - Index0),
        "revindex0" => (long)(items.Count - Index0 - 1),
        "first" => Index0 == 0,
        "last" => Index0 == items.Count - 1,
        "length" => (long)items.Count,
        "depth" => 1L,
        "depth0" => 0L,
        "previtem" => Index0 > 0 ? items[Index0 - 1] : new JinjaUndefined("loop.previtem"),
        "nextitem" => Index0 + 1 < items.Count ? items[Index0 + 1] : new JinjaUndefined("loop.nextitem"),
        "cycle" => new JinjaFunction("loop.cycle", (_, args, _) =>
            args.Count == 0 ? throw new JinjaError("loop.cycle needs at least one argument") : args[Index0 % args.Count]),
        _ => new JinjaUndefined("loop." + name),
    };
}

internal sealed class Macro(string name, List<(string Name, Expr? Default)> parameters, List<Stmt> body, JinjaContext.Frame closure) : IJinjaCallable
{
    public string Name => name;

    public object? Call(JinjaContext ctx, List<object?> args, Dictionary<string, object?> kwargs) => Invoke(ctx, args, kwargs, null);

    public object? Invoke(JinjaContext ctx, List<object?> args, Dictionary<string, object?> kwargs, IJinjaCallable? caller)
    {
        if (args.Count > parameters.Count) throw new JinjaError($"macro '{name}' takes {parameters.Count} arguments, got {args.Count}");
        if (ctx.CallDepth >= JinjaLimits.MaxCallDepth)
            throw new JinjaError($"macro '{name}' is nested {ctx.CallDepth} calls deep, the sandbox limit (a macro that calls itself without end?)");
        if (!System.Runtime.CompilerServices.RuntimeHelpers.TryEnsureSufficientExecutionStack())
            throw new JinjaError($"macro '{name}': calls nest too deeply for the stack");
        ctx.CallDepth++;
        try { return InvokeCore(ctx, args, kwargs, caller); }
        finally { ctx.CallDepth--; }
    }

    private object? InvokeCore(JinjaContext ctx, List<object?> args, Dictionary<string, object?> kwargs, IJinjaCallable? caller)
    {
        return ctx.InFrame(() =>
        {
            var extra = new Dictionary<string, object?>(kwargs, StringComparer.Ordinal);
            for (int i = 0; i < parameters.Count; i++)
            {
                var (pname, def) = parameters[i];
                object? v;
                if (i < args.Count) v = args[i];
                else if (extra.Remove(pname, out var kv)) v = kv;
                else v = def is null ? new JinjaUndefined(pname) : def.Eval(ctx);
                ctx.Set(pname, v);
            }
            ctx.Set("varargs", args.Skip(parameters.Count).ToList());
            ctx.Set("kwargs", extra.ToDictionary(StringComparer.Ordinal));
            if (caller is not null) ctx.Set("caller", caller);
            var sb = new StringBuilder();
            Stmt.ExecAll(body, ctx, sb);
            return (object?)sb.ToString();
        }, closure);
    }
}

internal sealed class MacroStmt(string name, List<(string, Expr?)> parameters, List<Stmt> body) : Stmt
{
    public override Flow Exec(JinjaContext ctx, StringBuilder o)
    {
        ctx.Set(name, new Macro(name, parameters, body, ctx.Current));
        return Flow.Normal;
    }
}

/// <summary><c>{% call macro(args) %}body{% endcall %}</c>: the body becomes <c>caller()</c> inside the macro.</summary>
internal sealed class CallBlockStmt(CallExpr call, List<(string, Expr?)> callerParams, List<Stmt> body) : Stmt
{
    public override Flow Exec(JinjaContext ctx, StringBuilder o)
    {
        if (call.Callee.Eval(ctx) is not Macro m) throw new JinjaError("{% call %} needs a macro");
        var caller = new Macro("caller", callerParams, body, ctx.Current);
        var (args, kwargs) = call.EvalArgs(ctx);
        o.Append(Py.Str(m.Invoke(ctx, args, kwargs, caller)));
        return Flow.Normal;
    }
}
