namespace LlmArch.Tokenization.Jinja;

/// <summary>Recursive-descent parser for Jinja statements and expressions (Jinja2's operator precedence).</summary>
internal sealed class JinjaParser
{
    private readonly List<Tok> _toks;
    private int _pos;

    private int _depth;

    private JinjaParser(List<Tok> toks) { _toks = toks; }

    /// <summary>Runs a nested parse one level deeper: the depth is checked before recursing (never a stack overflow).</summary>
    private T Nested<T>(Func<T> parse)
    {
        if (++_depth > JinjaLimits.MaxNesting || !System.Runtime.CompilerServices.RuntimeHelpers.TryEnsureSufficientExecutionStack())
            throw Error($"blocks and expressions nest deeper than {JinjaLimits.MaxNesting} levels, the sandbox limit");
        try { return parse(); }
        finally { _depth--; }
    }

    public static List<Stmt> Parse(string source)
    {
        var p = new JinjaParser(JinjaLexer.Tokenize(source));
        var (body, end) = p.ParseBody();
        if (end is not null) throw p.Error($"unexpected '{{% {end} %}}'");
        return body;
    }

    private Tok Cur => _toks[_pos];
    private Tok Peek(int k = 1) => _toks[Math.Min(_pos + k, _toks.Count - 1)];
    private Tok Next() => _toks[_pos++];

    private LlmArchInputException Error(string what) => JinjaLexer.Error(Cur.Line, what);

    private bool IsOp(string op) => Cur.Kind == TokKind.Op && Cur.Value == op;
    private bool IsName(string n) => Cur.Kind == TokKind.Name && Cur.Value == n;

    private bool SkipOp(string op)
    {
        if (!IsOp(op)) return false;
        _pos++;
        return true;
    }

    private bool SkipName(string n)
    {
        if (!IsName(n)) return false;
        _pos++;
        return true;
    }

    private void ExpectOp(string op)
    {
        if (!SkipOp(op)) throw Error($"expected '{op}', found {Cur}");
    }

    private string ExpectName()
    {
        if (Cur.Kind != TokKind.Name) throw Error($"expected a name, found {Cur}");
        return Next().Value;
    }

    private void Expect(TokKind kind)
    {
        if (Cur.Kind != kind) throw Error($"expected {new Tok(kind, "", 0)}, found {Cur}");
        _pos++;
    }

    // ---------------------------------------------------------------- statements

    /// <summary>Parses until EOF or a block tag whose keyword is in <paramref name="ends"/> (left unconsumed after '{%').</summary>
    private (List<Stmt> Body, string? End) ParseBody(params string[] ends)
    {
        var body = new List<Stmt>();
        while (true)
        {
            var t = Cur;
            switch (t.Kind)
            {
                case TokKind.Eof:
                    if (ends.Length > 0) throw Error($"unexpected end of template, expected '{{% {ends[^1]} %}}'");
                    return (body, null);
                case TokKind.Text:
                    _pos++;
                    body.Add(new TextStmt(t.Value) { Line = t.Line });
                    break;
                case TokKind.VarBegin:
                    _pos++;
                    var e = ParseTupleOrExpr();
                    Expect(TokKind.VarEnd);
                    body.Add(new OutputStmt(e) { Line = t.Line });
                    break;
                case TokKind.BlockBegin:
                    if (Peek().Kind == TokKind.Name && ends.Contains(Peek().Value))
                    {
                        _pos++;
                        return (body, Next().Value);
                    }
                    _pos++;
                    body.Add(ParseStatement());
                    break;
                default:
                    throw Error($"unexpected {t}");
            }
        }
    }

    private void EndTag() => Expect(TokKind.BlockEnd);

    private Stmt ParseStatement() => Nested(ParseStatementCore);

    private Stmt ParseStatementCore()
    {
        int line = Cur.Line;
        string kw = ExpectName();
        Stmt s = kw switch
        {
            "if" => ParseIf(),
            "for" => ParseFor(),
            "set" => ParseSet(),
            "macro" => ParseMacro(),
            "call" => ParseCallBlock(),
            "filter" => ParseFilterBlock(),
            "raw" => ParseRaw(),
            "break" or "continue" => ParseLoopControl(kw),
            "do" => ParseDo(),
            "generation" => ParseGeneration(),
            _ => throw JinjaLexer.Error(line, $"unknown or unsupported tag '{kw}'"),
        };
        s.Line = line;
        return s;
    }

    private Stmt ParseIf()
    {
        var branches = new List<(Expr, List<Stmt>)>();
        List<Stmt>? elseBody = null;
        var cond = ParseExpression();
        EndTag();
        while (true)
        {
            var (body, end) = ParseBody("elif", "else", "endif");
            branches.Add((cond, body));
            if (end == "elif") { cond = ParseExpression(); EndTag(); continue; }
            EndTag();
            if (end == "else")
            {
                (elseBody, _) = ParseBody("endif");
                EndTag();
            }
            return new IfStmt(branches, elseBody);
        }
    }

    private Stmt ParseFor()
    {
        var target = ParseTarget(allowAttr: false);
        if (!SkipName("in")) throw Error($"expected 'in' in for loop, found {Cur}");
        var iter = ParseExpression(withCondExpr: false);
        Expr? filter = null;
        if (SkipName("if")) filter = ParseExpression(withCondExpr: false);
        if (SkipName("recursive")) throw Error("recursive for loops are not supported");
        EndTag();
        var (body, end) = ParseBody("else", "endfor");
        EndTag();
        List<Stmt>? elseBody = null;
        if (end == "else")
        {
            (elseBody, _) = ParseBody("endfor");
            EndTag();
        }
        return new ForStmt(target, iter, filter, body, elseBody);
    }

    private Target ParseTarget(bool allowAttr)
    {
        var parts = new List<Target>();
        bool paren = SkipOp("(");
        do
        {
            string name = ExpectName();
            if (allowAttr && SkipOp("."))
                parts.Add(new Target { NamespaceObj = new NameExpr(name), Attr = ExpectName() });
            else parts.Add(new Target { Name = name });
        } while (SkipOp(","));
        if (paren) ExpectOp(")");
        return parts.Count == 1 && !paren ? parts[0] : new Target { Tuple = parts };
    }

    private Stmt ParseSet()
    {
        var target = ParseTarget(allowAttr: true);
        if (SkipOp("="))
        {
            var value = ParseTupleOrExpr();
            EndTag();
            return new SetStmt(target, value);
        }
        var filters = new List<FilterExpr.Call>();
        while (SkipOp("|")) filters.Add(ParseFilterCall());
        EndTag();
        var (body, _) = ParseBody("endset");
        EndTag();
        return new SetBlockStmt(target, body, filters);
    }

    private List<(string, Expr?)> ParseParams()
    {
        var ps = new List<(string, Expr?)>();
        ExpectOp("(");
        while (!IsOp(")"))
        {
            string n = ExpectName();
            Expr? def = SkipOp("=") ? ParseExpression() : null;
            ps.Add((n, def));
            if (!SkipOp(",")) break;
        }
        ExpectOp(")");
        return ps;
    }

    private Stmt ParseMacro()
    {
        string name = ExpectName();
        var ps = ParseParams();
        EndTag();
        var (body, _) = ParseBody("endmacro");
        if (Cur.Kind == TokKind.Name) _pos++; // {% endmacro name %}
        EndTag();
        return new MacroStmt(name, ps, body);
    }

    private Stmt ParseCallBlock()
    {
        var callerParams = IsOp("(") ? ParseParams() : new List<(string, Expr?)>();
        var e = ParseExpression();
        if (e is not CallExpr call) throw Error("{% call %} expects a macro call");
        EndTag();
        var (body, _) = ParseBody("endcall");
        EndTag();
        return new CallBlockStmt(call, callerParams, body);
    }

    private Stmt ParseFilterBlock()
    {
        var filters = new List<FilterExpr.Call> { ParseFilterCall() };
        while (SkipOp("|")) filters.Add(ParseFilterCall());
        EndTag();
        var (body, _) = ParseBody("endfilter");
        EndTag();
        return new FilterBlockStmt(body, filters);
    }

    private Stmt ParseRaw()
    {
        EndTag();
        string text = Cur.Kind == TokKind.Text ? Next().Value : "";
        Expect(TokKind.BlockBegin);
        if (!SkipName("endraw")) throw Error("expected '{% endraw %}'");
        EndTag();
        return new TextStmt(text);
    }

    private Stmt ParseLoopControl(string kw)
    {
        EndTag();
        return new BreakStmt(kw == "break");
    }

    private Stmt ParseDo()
    {
        var e = ParseTupleOrExpr();
        EndTag();
        return new DoStmt(e);
    }

    /// <summary>transformers' AssistantTracker <c>{% generation %}</c> block: rendered as its body.</summary>
    private Stmt ParseGeneration()
    {
        EndTag();
        var (body, _) = ParseBody("endgeneration");
        EndTag();
        return new IfStmt([(new LiteralExpr(true), body)], null);
    }

    // ---------------------------------------------------------------- expressions

    private Expr ParseTupleOrExpr()
    {
        var first = ParseExpression();
        if (!IsOp(",")) return first;
        var items = new List<Expr> { first };
        while (SkipOp(","))
        {
            if (Cur.Kind is TokKind.BlockEnd or TokKind.VarEnd) break;
            items.Add(ParseExpression());
        }
        return new ListExpr(items, isTuple: true);
    }

    private Expr ParseExpression(bool withCondExpr = true) => Nested(() => ParseExpressionCore(withCondExpr));

    private Expr ParseExpressionCore(bool withCondExpr)
    {
        var e = ParseOr();
        if (!withCondExpr) return e;
        while (SkipName("if"))
        {
            var cond = ParseOr();
            Expr? otherwise = SkipName("else") ? ParseExpression() : null;
            e = new CondExpr(e, cond, otherwise);
        }
        return e;
    }

    private Expr ParseOr()
    {
        var e = ParseAnd();
        while (SkipName("or")) e = new OrExpr(e, ParseAnd());
        return e;
    }

    private Expr ParseAnd()
    {
        var e = ParseNot();
        while (SkipName("and")) e = new AndExpr(e, ParseNot());
        return e;
    }

    private Expr ParseNot() => SkipName("not") ? new NotExpr(Nested(ParseNot)) : ParseCompare();

    private static readonly HashSet<string> CompareOps = ["==", "!=", "<", "<=", ">", ">="];

    private Expr ParseCompare()
    {
        var first = ParseMath1();
        var rest = new List<(string, Expr)>();
        while (true)
        {
            if (Cur.Kind == TokKind.Op && CompareOps.Contains(Cur.Value)) { string op = Next().Value; rest.Add((op, ParseMath1())); }
            else if (IsName("in")) { _pos++; rest.Add(("in", ParseMath1())); }
            else if (IsName("not") && Peek().Kind == TokKind.Name && Peek().Value == "in") { _pos += 2; rest.Add(("not in", ParseMath1())); }
            else break;
        }
        return rest.Count == 0 ? first : new CompareExpr(first, rest);
    }

    private Expr ParseMath1()
    {
        var e = ParseConcat();
        while (IsOp("+") || IsOp("-")) { string op = Next().Value; e = new BinaryExpr(op, e, ParseConcat()); }
        return e;
    }

    private Expr ParseConcat()
    {
        var e = ParseMath2();
        while (SkipOp("~")) e = new BinaryExpr("~", e, ParseMath2());
        return e;
    }

    private Expr ParseMath2()
    {
        var e = ParsePow();
        while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) { string op = Next().Value; e = new BinaryExpr(op, e, ParsePow()); }
        return e;
    }

    private Expr ParsePow()
    {
        var e = ParseUnary(true);
        while (SkipOp("**")) e = new BinaryExpr("**", e, ParseUnary(true));
        return e;
    }

    private Expr ParseUnary(bool withFilter)
    {
        Expr e;
        if (SkipOp("-")) e = new NegExpr(Nested(() => ParseUnary(false)), true);
        else if (SkipOp("+")) e = new NegExpr(Nested(() => ParseUnary(false)), false);
        else e = ParsePrimary();
        e = ParsePostfix(e);
        if (withFilter) e = ParseFilterExpr(e);
        return e;
    }

    private Expr ParsePrimary()
    {
        var t = Cur;
        switch (t.Kind)
        {
            case TokKind.Name:
                _pos++;
                return t.Value switch
                {
                    "true" or "True" => new LiteralExpr(true),
                    "false" or "False" => new LiteralExpr(false),
                    "none" or "None" => new LiteralExpr(null),
                    _ => new NameExpr(t.Value),
                };
            case TokKind.String:
            {
                var s = new System.Text.StringBuilder();
                while (Cur.Kind == TokKind.String) s.Append(Next().Value);
                return new LiteralExpr(s.ToString());
            }
            case TokKind.Int:
                _pos++;
                return new LiteralExpr(long.Parse(t.Value, System.Globalization.CultureInfo.InvariantCulture));
            case TokKind.Float:
                _pos++;
                return new LiteralExpr(double.Parse(t.Value, System.Globalization.CultureInfo.InvariantCulture));
            case TokKind.Op when t.Value == "(":
            {
                _pos++;
                if (SkipOp(")")) return new ListExpr([], isTuple: true);
                var first = ParseExpression();
                if (SkipOp(")")) return first;
                var items = new List<Expr> { first };
                while (SkipOp(","))
                {
                    if (IsOp(")")) break;
                    items.Add(ParseExpression());
                }
                ExpectOp(")");
                return new ListExpr(items, isTuple: true);
            }
            case TokKind.Op when t.Value == "[":
            {
                _pos++;
                var items = new List<Expr>();
                while (!IsOp("]"))
                {
                    items.Add(ParseExpression());
                    if (!SkipOp(",")) break;
                }
                ExpectOp("]");
                return new ListExpr(items, isTuple: false);
            }
            case TokKind.Op when t.Value == "{":
            {
                _pos++;
                var pairs = new List<(Expr, Expr)>();
                while (!IsOp("}"))
                {
                    var k = ParseExpression();
                    ExpectOp(":");
                    pairs.Add((k, ParseExpression()));
                    if (!SkipOp(",")) break;
                }
                ExpectOp("}");
                return new DictExpr(pairs);
            }
            default:
                throw Error($"unexpected {t} in expression");
        }
    }

    private Expr ParsePostfix(Expr e)
    {
        while (true)
        {
            if (SkipOp("."))
            {
                if (Cur.Kind == TokKind.Int) e = new ItemExpr(e, new LiteralExpr(long.Parse(Next().Value, System.Globalization.CultureInfo.InvariantCulture)));
                else e = new AttrExpr(e, ExpectName());
            }
            else if (IsOp("[")) e = ParseSubscript(e);
            else if (IsOp("(")) e = ParseCall(e);
            else return e;
        }
    }

    private Expr ParseSubscript(Expr e)
    {
        ExpectOp("[");
        Expr? start = null, stop = null, step = null;
        bool isSlice = false;
        if (!IsOp(":")) start = ParseExpression();
        if (SkipOp(":"))
        {
            isSlice = true;
            if (!IsOp(":") && !IsOp("]")) stop = ParseExpression();
            if (SkipOp(":") && !IsOp("]")) step = ParseExpression();
        }
        ExpectOp("]");
        return isSlice ? new SliceExpr(e, start, stop, step) : new ItemExpr(e, start!);
    }

    private (List<Expr>, List<(string, Expr)>) ParseArgs()
    {
        ExpectOp("(");
        var args = new List<Expr>();
        var kwargs = new List<(string, Expr)>();
        while (!IsOp(")"))
        {
            if (Cur.Kind == TokKind.Name && Peek().Kind == TokKind.Op && Peek().Value == "=")
            {
                string n = Next().Value;
                _pos++;
                kwargs.Add((n, ParseExpression()));
            }
            else
            {
                if (kwargs.Count > 0) throw Error("positional argument after keyword argument");
                args.Add(ParseExpression());
            }
            if (!SkipOp(",")) break;
        }
        ExpectOp(")");
        return (args, kwargs);
    }

    private Expr ParseCall(Expr callee)
    {
        var (args, kwargs) = ParseArgs();
        return new CallExpr(callee, args, kwargs);
    }

    private FilterExpr.Call ParseFilterCall()
    {
        int line = Cur.Line;
        string name = ExpectName();
        while (SkipOp(".")) name += "." + ExpectName();
        if (!JinjaFilters.IsFilter(name)) throw JinjaLexer.Error(line, $"unknown filter '{name}'");
        var (args, kwargs) = IsOp("(") ? ParseArgs() : (new List<Expr>(), new List<(string, Expr)>());
        return new FilterExpr.Call(name, args, kwargs);
    }

    private Expr ParseFilterExpr(Expr e)
    {
        while (true)
        {
            if (SkipOp("|")) e = new FilterExpr(e, ParseFilterCall());
            else if (IsName("is"))
            {
                _pos++;
                bool negate = SkipName("not");
                int line = Cur.Line;
                string name = ExpectName();
                while (SkipOp(".")) name += "." + ExpectName();
                if (!JinjaFilters.IsTest(name)) throw JinjaLexer.Error(line, $"unknown test '{name}'");
                var args = new List<Expr>();
                if (IsOp("(")) args = ParseArgs().Item1;
                else if ((Cur.Kind is TokKind.Name or TokKind.String or TokKind.Int or TokKind.Float
                          || IsOp("(") || IsOp("[") || IsOp("{"))
                         && !(Cur.Kind == TokKind.Name && Cur.Value is "else" or "or" or "and" or "if" or "is" or "in" or "not"))
                    args.Add(ParsePostfix(ParsePrimary()));
                e = new TestExpr(e, name, args, negate);
            }
            else if (IsOp("(")) e = ParseCall(e);
            else return e;
        }
    }
}
