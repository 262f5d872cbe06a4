using System.Diagnostics;
using LlmArch.Tokenization.Jinja;

namespace LlmArch.Tests.Tokenization;

/// <summary>
/// The sandboxed template engine: every hostile template from the hardening issue ends in one clear
/// <see cref="LlmArchInputException"/>, quickly and without a stack overflow or a runaway allocation.
/// </summary>
public class JinjaSandboxTests
{
    private static string Fails(string template, Dictionary<string, object?>? vars = null)
    {
        var sw = Stopwatch.StartNew();
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<LlmArchInputException>(() => JinjaTemplate.Parse(template).Render(vars ?? new()));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(sw.Elapsed.TotalSeconds < 20, $"took {sw.Elapsed.TotalSeconds:F1}s");
        Assert.True(allocated < 3L << 30, $"allocated {allocated >> 20} MiB");
        Assert.StartsWith("chat template:", e.Message);
        return e.Message;
    }

    [Fact]
    public void SelfRecursiveMacro() =>
        Assert.Contains("nested 64 calls deep", Fails("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"));

    [Fact]
    public void FiftyThousandNestedParentheses() =>
        Assert.Contains("nest deeper than 64", Fails("{{ " + new string('(', 50_000) + "1" + new string(')', 50_000) + " }}"));

    [Fact]
    public void DeeplyNestedBlocks() =>
        Assert.Contains("nest deeper than 64", Fails(string.Concat(Enumerable.Repeat("{% if true %}", 5000)) + "x" + string.Concat(Enumerable.Repeat("{% endif %}", 5000))));

    [Fact]
    public void LongUnaryAndFilterChains()
    {
        Assert.Contains("nest deeper", Fails("{{ " + string.Concat(Enumerable.Repeat("not ", 100_000)) + "1 }}"));
        Assert.Contains("nest deeper", Fails("{{ " + string.Concat(Enumerable.Repeat("- ", 100_000)) + "1 }}"));
        // a|lower|lower|... is a loop in the parser but a deep tree to evaluate
        Fails("{{ 'a'" + string.Concat(Enumerable.Repeat("|lower", 200_000)) + " }}");
        Fails("{{ 1" + string.Concat(Enumerable.Repeat(" + 1", 200_000)) + " }}");
    }

    [Fact]
    public void HugeRepetition()
    {
        Assert.Contains("over the sandbox limit", Fails("{{ 'a' * 10**10 }}"));
        Assert.Contains("over the sandbox limit", Fails("{{ ([1] * 10**9) | length }}"));
        Assert.Contains("over the sandbox limit", Fails("{{ 'ab' | center(10**9) }}"));
        Assert.Contains("over the sandbox limit", Fails("{{ 'ab'.ljust(10**9) }}"));
        Assert.Contains("over the sandbox limit", Fails("{{ ('a' * 1000000) | replace('a', 'aaaaaaaaaaaaaaaaaaaa') }}"));
    }

    [Fact]
    public void StringDoubledFortyTimes() =>
        Assert.Contains("over the sandbox limit", Fails("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}"));

    [Fact]
    public void ThreeNestedRangeLoops() =>
        Assert.Contains("budget", Fails("{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}{% endfor %}{% endfor %}{% endfor %}"));

    [Fact]
    public void HugeRange() => Assert.Contains("range()", Fails("{% for i in range(10**12) %}{% endfor %}"));

    [Fact]
    public void SelfContainingListPrintsAnError()
    {
        Assert.Contains("nests deeper", Fails("{% set l = [] %}{% do l.append(l) %}{{ l }}"));
        Assert.Contains("nests deeper", Fails("{% set l = [] %}{% do l.append(l) %}{{ l | tojson }}"));
        Assert.Contains("nests deeper", Fails("{% set l = [] %}{% do l.append(l) %}{% set m = [] %}{% do m.append(m) %}{{ l == m }}"));
    }

    [Fact]
    public void SharedListsCannotExplodeWhenPrinted()
    {
        // 2^40 leaves when printed, from 40 small lists that share their halves
        Fails("{% set ns = namespace(x=[1]) %}{% for i in range(40) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x | tojson }}");
        Fails("{% set ns = namespace(x=[1]) %}{% for i in range(40) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x }}");
        Fails("{% set big = 'x' * 8000000 %}{{ ([big] * 1000) | join }}");
        Fails("{% set big = ['x' * 100000] %}{% for i in range(100000) %}{% set s = big | string %}{% endfor %}");
    }

    [Fact]
    public void HugeOutput() =>
        Assert.Contains("output", Fails("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"));

    [Fact]
    public void HugeIntegerLiteralIsASyntaxError() =>
        Assert.Contains("chat template", Assert.Throws<LlmArchInputException>(() => JinjaTemplate.Parse("{{ 99999999999999999999999 }}")).Message);

    [Fact]
    public void DeeplyNestedInputValues()
    {
        object? v = "leaf";
        for (int i = 0; i < 10_000; i++) v = new List<object?> { v };
        Assert.Contains("nests deeper", Fails("{{ x }}", new() { ["x"] = v }));
    }

    [Fact]
    public void RealTemplatesStayWithinTheLimits()
    {
        // A long conversation through a realistic template: thousands of messages, well inside every limit.
        var msgs = Enumerable.Range(0, 2000).Select(i => (object?)new Dictionary<string, object?> { ["role"] = i % 2 == 0 ? "user" : "assistant", ["content"] = $"message {i} " + new string('x', 200) }).ToList();
        string t = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        string r = JinjaTemplate.Parse(t).Render(new Dictionary<string, object?> { ["messages"] = msgs, ["add_generation_prompt"] = true });
        Assert.EndsWith("<|im_start|>assistant\n", r);
        Assert.True(r.Length > 400_000);
    }
}
