using System.Diagnostics;
using System.Text;
using System.Text.Json;
using LlmArch.Generation.Constraints;
using LlmArch.Tokenization;
using Xunit.Abstractions;

namespace LlmArch.Serving.Tests;

/// <summary>
/// JSON / JSON-schema constrained decoding over the real Qwen3 vocabulary (151,669 tokens): the mask admits exactly
/// the tokens that keep the output a valid prefix, random sampling under it always yields schema-valid JSON, and a
/// target text can be written token by token.
/// </summary>
public class ConstraintTests(ITestOutputHelper output)
{
    private static Tokenizer Qwen => TestData.RealTokenizer("qwen3");
    private static TokenVocabulary Vocab => TokenVocabulary.For(Qwen, 151936);

    private static JsonSchemaGrammar Schema(string json) => JsonSchemaGrammar.Compile(JsonDocument.Parse(json).RootElement);

    private static bool IsAllowed(ReadOnlySpan<ulong> mask, int id) => (mask[id >> 6] & (1UL << (id & 63))) != 0;

    /// <summary>Writes <paramref name="target"/> by always taking the longest allowed token that matches its next bytes.</summary>
    private static int WriteGreedily(JsonConstraint c, string target)
    {
        var bytes = Encoding.UTF8.GetBytes(target);
        var vocab = Vocab;
        int pos = 0, steps = 0;
        while (pos < bytes.Length)
        {
            var mask = c.Allowed();
            int best = -1, bestLen = 0;
            for (int id = 0; id < vocab.Size; id++)
            {
                var b = vocab.Bytes[id];
                if (b is null || b.Length <= bestLen || b.Length > bytes.Length - pos || !bytes.AsSpan(pos, b.Length).SequenceEqual(b)) continue;
                if (IsAllowed(mask, id)) { best = id; bestLen = b.Length; }
            }
            Assert.True(best >= 0, $"no allowed token continues at byte {pos} of {target}");
            c.Accept(best);
            pos += bestLen; steps++;
            Assert.False(c.Failed);
        }
        return steps;
    }

    [Fact]
    public void TokenBytesRoundTrip()
    {
        // Byte-level: the bytes of the ids of a text are the text's UTF-8.
        string text = "{\"naïve\": [1, -2.5e3, \"日本語\\n\"], \"ok\": true}";
        var ids = Qwen.Encode(text);
        var bytes = ids.SelectMany(id => Vocab.Bytes[id]!).ToArray();
        Assert.Equal(text, Encoding.UTF8.GetString(bytes));
        Assert.Null(Vocab.Bytes[Qwen.TokenToId("<|im_end|>")!.Value]); // special: never allowed under a constraint
        Assert.Null(Vocab.Bytes[151935]); // padding rows past the tokenizer
    }

    [Theory]
    [InlineData("{\"a\": 1, \"b\": [true, false, null, \"x\\u00e9\"], \"c\": {\"d\": -0.5E+2}}")]
    [InlineData("{}")]
    [InlineData("{ \"日本\" : \"語\" }")]
    public void AnyObjectAcceptsValidJsonAndCompletesAtItsEnd(string json)
    {
        var c = new JsonConstraint(Vocab, JsonSchemaGrammar.AnyObject());
        Assert.False(c.IsComplete);
        WriteGreedily(c, json);
        Assert.True(c.IsComplete);
    }

    [Fact]
    public void MaskRejectsInvalidContinuations()
    {
        var c = new JsonConstraint(Vocab, JsonSchemaGrammar.AnyObject());
        int Tok(string s) => Qwen.TokenToId(s) ?? throw new InvalidOperationException(s);
        var m = c.Allowed();
        Assert.True(IsAllowed(m, Tok("{")));
        Assert.False(IsAllowed(m, Tok("[")));      // json_object: the top level is an object
        Assert.False(IsAllowed(m, Tok("a")));
        WriteGreedily(c, "{\"a\":");
        m = c.Allowed();
        Assert.False(IsAllowed(m, Tok("}")));      // a value must follow the colon
        Assert.True(IsAllowed(m, Tok("1")));
        Assert.True(IsAllowed(m, Tok("Ġ\"")));     // ' "' : a space then a string
        WriteGreedily(c, "\"x");
        m = c.Allowed();
        Assert.True(IsAllowed(m, Tok("\"}")));     // closing the string and the object in one token
        Assert.True(IsAllowed(m, Tok("Ġworld")));  // free string content
        Assert.False(IsAllowed(m, Tok("Ċ")));      // a raw newline: control characters are not allowed in strings
    }

    private const string PersonSchema = """
        {"type":"object","properties":{
          "name":{"type":"string","maxLength":12},
          "age":{"type":"integer"},
          "role":{"enum":["admin","user",null]},
          "tags":{"type":"array","items":{"type":"string"},"maxItems":3},
          "score":{"type":["number","null"]},
          "address":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}},
         "required":["name","age","role"],"additionalProperties":false}
        """;

    private static void AssertPerson(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var r = doc.RootElement;
        Assert.Equal(JsonValueKind.Object, r.ValueKind);
        var allowed = new[] { "name", "age", "role", "tags", "score", "address" };
        foreach (var p in r.EnumerateObject()) Assert.Contains(p.Name, allowed);
        Assert.True(r.GetProperty("name").GetString()!.Length <= 12);
        Assert.True(r.GetProperty("age").TryGetInt64(out _));
        var role = r.GetProperty("role");
        Assert.True(role.ValueKind == JsonValueKind.Null || role.GetString() is "admin" or "user");
        if (r.TryGetProperty("tags", out var tags)) Assert.True(tags.GetArrayLength() <= 3 && tags.EnumerateArray().All(t => t.ValueKind == JsonValueKind.String));
        if (r.TryGetProperty("score", out var s)) Assert.True(s.ValueKind is JsonValueKind.Number or JsonValueKind.Null);
        if (r.TryGetProperty("address", out var a)) { Assert.Single(a.EnumerateObject()); Assert.Equal(JsonValueKind.String, a.GetProperty("city").ValueKind); }
        Assert.Equal(r.EnumerateObject().Count(), r.EnumerateObject().Select(p => p.Name).Distinct().Count());
    }

    [Fact]
    public void SchemaAcceptsAConformingDocument()
    {
        var c = new JsonConstraint(Vocab, Schema(PersonSchema));
        WriteGreedily(c, """{"role": null, "name": "Ada", "tags": ["x", "y"], "age": 36, "address": {"city": "London"}, "score": -1.5}""");
        Assert.True(c.IsComplete);
    }

    [Fact]
    public void RandomSamplingUnderTheSchemaMaskAlwaysGivesValidDocuments()
    {
        var vocab = Vocab;
        var rng = new Random(7);
        var logits = new float[vocab.Size];
        int completed = 0;
        for (int run = 0; run < 12; run++)
        {
            var c = new JsonConstraint(vocab, Schema(PersonSchema));
            var text = new List<byte>();
            for (int step = 0; step < 400 && !c.IsComplete; step++)
            {
                for (int i = 0; i < logits.Length; i++) logits[i] = (float)rng.NextDouble();
                // Favour tokens that end strings and structures so documents finish within the budget.
                foreach (var id in Qwen.Encode("\"}\",\"]}, ]"))
                    logits[id] += 3;
                c.Mask(logits);
                int best = 0;
                for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
                Assert.False(float.IsNegativeInfinity(logits[best]), "every token was masked");
                c.Accept(best);
                Assert.False(c.Failed);
                text.AddRange(vocab.Bytes[best]!);
            }
            if (!c.IsComplete) continue;
            completed++;
            AssertPerson(Encoding.UTF8.GetString(text.ToArray()));
        }
        Assert.True(completed >= 6, $"only {completed} of 12 random documents completed");
    }

    [Theory]
    [InlineData("""{"type":"string","pattern":"^a"}""", "'pattern'")]
    [InlineData("""{"type":"integer","minimum":3}""", "'minimum'")]
    [InlineData("""{"anyOf":[{"type":"string"},{"type":"string","maxLength":2}]}""", "same JSON type")]
    [InlineData("""{"type":"object","required":["x"]}""", "not in 'properties'")]
    [InlineData("""{"$ref":"#/$defs/missing"}""", "does not resolve")]
    [InlineData("""{"type":"strange"}""", "unknown type")]
    public void UnsupportedOrInvalidSchemasAreRefusedNamingTheKeyword(string schema, string expected)
    {
        var e = Assert.ThrowsAny<LlmArchInputException>(() => Schema(schema));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void RecursiveRefsAndEnumsOfNumbers()
    {
        var g = Schema("""{"$defs":{"node":{"type":"object","properties":{"v":{"enum":[1,12,123]},"next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},"required":["v","next"],"additionalProperties":false}},"$ref":"#/$defs/node"}""");
        var c = new JsonConstraint(Vocab, g);
        WriteGreedily(c, """{"v":12,"next":{"v":1,"next":{"v":123,"next":null}}}""");
        Assert.True(c.IsComplete);
    }

    /// <summary>
    /// The cost of a mask with the 151,669-token Qwen3 vocabulary at representative states (reported, never asserted):
    /// LLMARCH_BENCH=1 dotnet test tests/LlmArch.Serving.Tests -c Release --filter Category=Bench
    /// </summary>
    [Fact]
    [Trait("Category", "Bench")]
    public void MaskCostPerToken()
    {
        if (Environment.GetEnvironmentVariable("LLMARCH_BENCH") != "1") return;
        var sw = Stopwatch.StartNew();
        var vocab = TokenVocabulary.For(Tokenizer.Load(TestData.TokenizerDir("qwen3")), 151936);
        output.WriteLine($"vocabulary tables: {sw.Elapsed.TotalMilliseconds:F0} ms (trie nodes: {vocab.TrieNodes})");
        string doc = """{"name": "Ada Lovelace", "age": 36, "role": "admin", "tags": ["math", "poetry", "engines"], "score": 9.75, "address": {"city": "London"}}""";
        var logits = new float[vocab.Size];
        foreach (var (label, grammar) in new[] { ("json_object", JsonSchemaGrammar.AnyObject()), ("schema", Schema(PersonSchema)) })
        {
            var times = new List<double>();
            for (int rep = 0; rep < 3; rep++)
            {
                var c = new JsonConstraint(vocab, grammar);
                foreach (int id in TestData.RealTokenizer("qwen3").Encode(doc))
                {
                    var t0 = Stopwatch.GetTimestamp();
                    c.Mask(logits);
                    times.Add(Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
                    c.Accept(id);
                }
            }
            times.Sort();
            output.WriteLine($"{label}: {times.Count} masks, median {times[times.Count / 2]:F0} us, p90 {times[times.Count * 9 / 10]:F0} us, max {times[^1]:F0} us per token");
        }
    }
}
