using System.Text;

namespace LlmArch.Tokenization.Jinja;

internal abstract class Expr
{
    /// <summary>Evaluates within the sandbox: one step of the budget, and the result's size checked.</summary>
    public object? Eval(JinjaContext ctx)
    {
        ctx.Tick();
        // Chains the parser builds in loops (a|f|f|..., a+b+c+...) are deep trees: evaluation stops cleanly at a fixed
        // depth (and, as a backstop, before the stack ends).
        if (ctx.ExprDepth >= JinjaLimits.MaxExpressionDepth || !System.Runtime.CompilerServices.RuntimeHelpers.TryEnsureSufficientExecutionStack())
            throw new JinjaError($"an expression nests deeper than {JinjaLimits.MaxExpressionDepth} levels, the sandbox limit");
        ctx.ExprDepth++;
        try { return JinjaLimits.Check(EvalCore(ctx)); }
        finally { ctx.ExprDepth--; }
    }

    protected abstract object? EvalCore(JinjaContext ctx);
}

internal sealed class LiteralExpr(object? value) : Expr
{
    public object? Value => value;
    protected override object? EvalCore(JinjaContext ctx) => value;
}

internal sealed class NameExpr(string name) : Expr
{
    public string Name => name;
    protected override object? EvalCore(JinjaContext ctx) => ctx.Lookup(name);
}

internal sealed class ListExpr(List<Expr> items, bool isTuple) : Expr
{
    public List<Expr> Items => items;
    public bool IsTuple => isTuple;

    protected override object? EvalCore(JinjaContext ctx)
    {
        var vals = items.Select(i => i.Eval(ctx));
        return isTuple ? new JinjaTuple(vals) : vals.ToList();
    }
}

internal sealed class DictExpr(List<(Expr Key, Expr Value)> pairs) : Expr
{
    protected override object? EvalCore(JinjaContext ctx)
    {
        var d = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (k, v) in pairs) d[Py.Str(k.Eval(ctx))] = v.Eval(ctx);
        return d;
    }
}

internal sealed class AttrExpr(Expr obj, string name) : Expr
{
    public Expr Obj => obj;
    public string Name => name;
    protected override object? EvalCore(JinjaContext ctx) => JinjaOps.GetAttr(obj.Eval(ctx), name);
}

internal sealed class ItemExpr(Expr obj, Expr key) : Expr
{
    protected override object? EvalCore(JinjaContext ctx) => JinjaOps.GetItem(obj.Eval(ctx), key.Eval(ctx));
}

internal sealed class SliceExpr(Expr obj, Expr? start, Expr? stop, Expr? step) : Expr
{
    protected override object? EvalCore(JinjaContext ctx) =>
        JinjaOps.Slice(obj.Eval(ctx), start?.Eval(ctx), stop?.Eval(ctx), step?.Eval(ctx));
}

internal sealed class CallExpr(Expr callee, List<Expr> args, List<(string Name, Expr Value)> kwargs) : Expr
{
    public Expr Callee => callee;

    public (List<object?>, Dictionary<string, object?>) EvalArgs(JinjaContext ctx)
    {
        var a = args.Select(x => x.Eval(ctx)).ToList();
        var k = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (n, v) in kwargs) k[n] = v.Eval(ctx);
        return (a, k);
    }

    protected override object? EvalCore(JinjaContext ctx)
    {
        var f = callee.Eval(ctx);
        var (a, k) = EvalArgs(ctx);
        if (f is IJinjaCallable c) return c.Call(ctx, a, k);
        string what = callee switch
        {
            NameExpr n => $"'{n.Name}'",
            AttrExpr at => $"'{at.Name}'",
            _ => "expression",
        };
        throw new JinjaError(f is JinjaUndefined ? $"{what} is undefined and cannot be called" : $"{what} ({Py.TypeName(f)}) is not callable");
    }
}

internal sealed class FilterExpr(Expr value, FilterExpr.Call filter) : Expr
{
    /// <summary>One filter application: name and arguments (checked against known filters when parsed).</summary>
    internal sealed class Call(string name, List<Expr> args, List<(string, Expr)> kwargs)
    {
        public string Name => name;

        public object? Apply(JinjaContext ctx, object? v)
        {
            var a = args.Select(x => x.Eval(ctx)).ToList();
            var k = new Dictionary<string, object?>(StringComparer.Ordinal);
            foreach (var (n, e) in kwargs) k[n] = e.Eval(ctx);
            return JinjaFilters.Apply(ctx, name, v, a, k);
        }
    }

    protected override object? EvalCore(JinjaContext ctx) => filter.Apply(ctx, value.Eval(ctx));
}

internal sealed class TestExpr(Expr value, string name, List<Expr> args, bool negate) : Expr
{
    protected override object? EvalCore(JinjaContext ctx)
    {
        bool r = JinjaFilters.Test(ctx, name, value.Eval(ctx), args.Select(a => a.Eval(ctx)).ToList());
        return negate ? !r : r;
    }
}

internal sealed class NotExpr(Expr e) : Expr
{
    protected override object? EvalCore(JinjaContext ctx) => !Py.Truthy(e.Eval(ctx));
}

internal sealed class NegExpr(Expr e, bool negate) : Expr
{
    protected override object? EvalCore(JinjaContext ctx)
    {
        var v = e.Eval(ctx);
        if (!negate) return v;
        return v switch
        {
            long l => (object)-l,
            double d => -d,
            bool b => b ? -1L : 0L,
            _ => throw new JinjaError($"bad operand type for unary -: '{Py.TypeName(v)}'"),
        };
    }
}

internal sealed class AndExpr(Expr l, Expr r) : Expr
{
    protected override object? EvalCore(JinjaContext ctx) { var a = l.Eval(ctx); return Py.Truthy(a) ? r.Eval(ctx) : a; }
}

internal sealed class OrExpr(Expr l, Expr r) : Expr
{
    protected override object? EvalCore(JinjaContext ctx) { var a = l.Eval(ctx); return Py.Truthy(a) ? a : r.Eval(ctx); }
}

internal sealed class CondExpr(Expr then, Expr cond, Expr? otherwise) : Expr
{
    protected override object? EvalCore(JinjaContext ctx) =>
        Py.Truthy(cond.Eval(ctx)) ? then.Eval(ctx) : otherwise is null ? new JinjaUndefined("else") : otherwise.Eval(ctx);
}

internal sealed class BinaryExpr(string op, Expr l, Expr r) : Expr
{
    protected override object? EvalCore(JinjaContext ctx) => JinjaOps.Binary(op, l.Eval(ctx), r.Eval(ctx));
}

internal sealed class CompareExpr(Expr first, List<(string Op, Expr Right)> rest) : Expr
{
    protected override object? EvalCore(JinjaContext ctx)
    {
        var left = first.Eval(ctx);
        foreach (var (op, re) in rest)
        {
            var right = re.Eval(ctx);
            bool ok = op switch
            {
                "==" => Py.Eq(left, right),
                "!=" => !Py.Eq(left, right),
                "<" => Py.Compare(left, right) < 0,
                "<=" => Py.Compare(left, right) <= 0,
                ">" => Py.Compare(left, right) > 0,
                ">=" => Py.Compare(left, right) >= 0,
                "in" => Py.Contains(right, left),
                "not in" => !Py.Contains(right, left),
                _ => throw new JinjaError($"unknown operator {op}"),
            };
            if (!ok) return false;
            left = right;
        }
        return true;
    }
}

/// <summary>Attribute, item, slice and arithmetic semantics (Python's, as Jinja exposes them).</summary>
internal static class JinjaOps
{
    public static object? GetAttr(object? obj, string name)
    {
        switch (obj)
        {
            case JinjaUndefined u: throw new JinjaError($"'{u.Name}' is undefined (while reading its attribute '{name}')");
            case JinjaNamespace ns: return ns.Attrs.TryGetValue(name, out var v) ? v : new JinjaUndefined(name);
            case LoopInfo loop: return loop.Get(name);
            case Dictionary<string, object?> d:
                if (JinjaMethods.Bind(obj, name) is { } dm) return dm;
                return d.TryGetValue(name, out var dv) ? dv : new JinjaUndefined(name);
            default:
                return JinjaMethods.Bind(obj, name) ?? (object?)new JinjaUndefined(name);
        }
    }

    public static object? GetItem(object? obj, object? key)
    {
        switch (obj)
        {
            case JinjaUndefined u: throw new JinjaError($"'{u.Name}' is undefined (while reading item {Py.Repr(key)})");
            case Dictionary<string, object?> d:
                string k = key as string ?? Py.Str(key);
                return d.TryGetValue(k, out var v) ? v : JinjaMethods.Bind(obj, k) ?? (object?)new JinjaUndefined(k);
            case List<object?> l when key is long or bool:
            {
                long i = Py.ToLong(key);
                if (i < 0) i += l.Count;
                return i >= 0 && i < l.Count ? l[(int)i] : new JinjaUndefined($"[{key}]");
            }
            case string s when key is long or bool:
            {
                var chars = Py.TextElements(s);
                long i = Py.ToLong(key);
                if (i < 0) i += chars.Count;
                return i >= 0 && i < chars.Count ? chars[(int)i] : new JinjaUndefined($"[{key}]");
            }
            case JinjaNamespace or LoopInfo when key is string ks: return GetAttr(obj, ks);
            default:
                return key is string name ? GetAttr(obj, name) : new JinjaUndefined($"[{Py.Str(key)}]");
        }
    }

    public static object? Slice(object? obj, object? start, object? stop, object? step)
    {
        long st = step is null || step is JinjaUndefined ? 1 : Py.ToLong(step);
        if (st == 0) throw new JinjaError("slice step cannot be zero");
        List<object?> items = obj switch
        {
            string s => Py.TextElements(s),
            List<object?> l => l,
            JinjaUndefined => new List<object?>(),
            _ => throw new JinjaError($"'{Py.TypeName(obj)}' object is not subscriptable"),
        };
        int n = items.Count;
        long Norm(object? v, long dflt, long lo, long hi)
        {
            if (v is null || v is JinjaUndefined) return dflt;
            long x = Py.ToLong(v);
            if (x < 0) x += n;
            return Math.Clamp(x, lo, hi);
        }
        var r = new List<object?>();
        if (st > 0)
        {
            long a = Norm(start, 0, 0, n), b = Norm(stop, n, 0, n);
            for (long i = a; i < b; i += st) r.Add(items[(int)i]);
        }
        else
        {
            long a = Norm(start, n - 1, -1, n - 1), b = Norm(stop, -1, -1, n - 1);
            if (stop is not null && stop is not JinjaUndefined && Py.ToLong(stop) < -n) b = -1;
            for (long i = a; i > b; i += st) r.Add(items[(int)i]);
        }
        return obj is string ? string.Concat(r.Cast<string>()) : r;
    }

    public static object? Binary(string op, object? a, object? b)
    {
        if (op == "~") return Concat(Py.Str(a), Py.Str(b));
        if (a is JinjaUndefined ua) throw new JinjaError($"'{ua.Name}' is undefined (used with '{op}')");
        if (b is JinjaUndefined ub) throw new JinjaError($"'{ub.Name}' is undefined (used with '{op}')");
        switch (op)
        {
            case "+":
                if (a is string sa && b is string sb) return Concat(sa, sb);
                if (a is List<object?> la && b is List<object?> lb)
                {
                    JinjaLimits.Size((long)la.Count + lb.Count, "a list", JinjaLimits.MaxList);
                    return la.Concat(lb).ToList();
                }
                break;
            case "*":
                if (a is string s1 && b is long n1) return Repeat(s1, n1);
                if (a is long n2 && b is string s2) return Repeat(s2, n2);
                if (a is List<object?> l1 && b is long n3)
                {
                    if (n3 > 0 && l1.Count > 0) JinjaLimits.Size(n3 > JinjaLimits.MaxList ? n3 : n3 * l1.Count, "a repeated list", JinjaLimits.MaxList);
                    return Enumerable.Range(0, (int)Math.Clamp(n3, 0, JinjaLimits.MaxList)).SelectMany(_ => l1).ToList();
                }
                break;
            case "%":
                if (a is string fmt) return PercentFormat(fmt, b);
                break;
        }
        if (!Py.IsNumber(a) || !Py.IsNumber(b))
            throw new JinjaError($"unsupported operand type(s) for {op}: '{Py.TypeName(a)}' and '{Py.TypeName(b)}'");
        bool isFloat = a is double || b is double;
        if (isFloat || op == "/")
        {
            double x = Py.ToDouble(a), y = Py.ToDouble(b);
            if (y == 0 && op is "/" or "//" or "%") throw new JinjaError("division by zero");
            return op switch
            {
                "+" => x + y,
                "-" => x - y,
                "*" => x * y,
                "/" => x / y,
                "//" => Math.Floor(x / y),
                "%" => x - Math.Floor(x / y) * y,
                "**" => Math.Pow(x, y),
                _ => throw new JinjaError($"unknown operator {op}"),
            };
        }
        long p = Py.ToLong(a), q = Py.ToLong(b);
        if (q == 0 && op is "//" or "%") throw new JinjaError("division by zero");
        return op switch
        {
            "+" => p + q,
            "-" => p - q,
            "*" => p * q,
            "//" => FloorDiv(p, q),
            "%" => p - FloorDiv(p, q) * q,
            "**" => q >= 0 ? (object)(long)Math.Pow(p, q) : Math.Pow(p, q),
            _ => throw new JinjaError($"unknown operator {op}"),
        };
    }

    private static long FloorDiv(long a, long b)
    {
        long d = a / b;
        if ((a % b != 0) && ((a < 0) != (b < 0))) d--;
        return d;
    }

    private static string Concat(string a, string b)
    {
        if ((long)a.Length + b.Length > JinjaLimits.MaxString) throw JinjaLimits.TooLong("a concatenated string", (long)a.Length + b.Length);
        return a + b;
    }

    private static string Repeat(string s, long n)
    {
        if (n <= 0 || s.Length == 0) return "";
        if (n > JinjaLimits.MaxString || n * s.Length > JinjaLimits.MaxString) throw JinjaLimits.TooLong("a repeated string", n > JinjaLimits.MaxString ? n : n * s.Length);
        var sb = new StringBuilder(s.Length * (int)n);
        for (long i = 0; i < n; i++) sb.Append(s);
        return sb.ToString();
    }

    /// <summary>printf-style <c>'%s' % x</c> for %s, %d, %i, %r, %f and %%.</summary>
    private static string PercentFormat(string fmt, object? arg)
    {
        var args = arg is JinjaTuple t ? t.ToList() : new List<object?> { arg };
        var sb = new StringBuilder();
        int ai = 0;
        for (int i = 0; i < fmt.Length; i++)
        {
            if (fmt[i] != '%' || i + 1 >= fmt.Length) { sb.Append(fmt[i]); continue; }
            char c = fmt[++i];
            if (c == '%') { sb.Append('%'); continue; }
            if (ai >= args.Count) throw new JinjaError("not enough arguments for format string");
            var v = args[ai++];
            sb.Append(c switch
            {
                's' => Py.Str(v),
                'r' => Py.Repr(v),
                'd' or 'i' => Py.ToLong(v).ToString(System.Globalization.CultureInfo.InvariantCulture),
                'f' => Py.ToDouble(v).ToString("F6", System.Globalization.CultureInfo.InvariantCulture),
                _ => throw new JinjaError($"unsupported format character '{c}'"),
            });
        }
        return sb.ToString();
    }
}
