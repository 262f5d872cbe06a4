using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace LlmArch.Generation.Constraints;

/// <summary>JSON value types a schema node admits (bit flags).</summary>
[Flags]
internal enum JsonTypes : byte
{
    None = 0, Object = 1, Array = 2, String = 4, Integer = 8, Number = 16, Boolean = 32, Null = 64,
    All = Object | Array | String | Number | Boolean | Null,
}

/// <summary>One compiled schema node: the types it admits and, per type, what the automaton must enforce.</summary>
internal sealed class SchemaNode
{
    public JsonTypes Types;
    /// <summary>Property names as the escaped UTF-8 bytes that appear between the key's quotes, sorted bytewise.</summary>
    public byte[][] PropKeys = [];
    public int[] PropNodes = [];
    public ulong Required;
    /// <summary>Node of additional properties; <see cref="JsonSchemaGrammar.NoNode"/> when they are not allowed.</summary>
    public int Additional = JsonSchemaGrammar.AnyNode;
    public int Items = JsonSchemaGrammar.AnyNode;
    public int MinItems, MaxItems = int.MaxValue;
    public int MinLength, MaxLength = int.MaxValue;
    /// <summary>enum / const: the values' compact JSON texts (sorted bytewise); the value must be one of them.</summary>
    public byte[][]? Literals;
    /// <summary>anyOf: the alternative nodes that handle objects, arrays and strings (their details are read there, so recursive alternatives work).</summary>
    public int ObjectFrom = -1, ArrayFrom = -1, StringFrom = -1;
}

/// <summary>
/// A JSON schema compiled for constrained decoding. Supported: type (one or a list), properties, required,
/// additionalProperties (bool or schema), items, minItems/maxItems, minLength/maxLength, enum, const, anyOf/oneOf
/// whose alternatives differ in type, $ref to #, #/$defs/... and #/definitions/... (recursion allowed), nullable.
/// Annotations (description, title, default, examples, format, ...) do not constrain and are ignored; any other
/// validation keyword is refused with an error naming it and where it is, never silently dropped.
/// </summary>
public sealed class JsonSchemaGrammar
{
    internal const int AnyNode = 0, NoNode = -1;
    internal readonly List<SchemaNode> Nodes = new();
    internal int Root;
    private readonly JsonElement _doc;
    private readonly Dictionary<string, int> _refs = new(StringComparer.Ordinal);
    private readonly string _where;

    private static readonly HashSet<string> Ignored = new(StringComparer.Ordinal)
    {
        "description", "title", "default", "examples", "format", "$schema", "$id", "$comment", "$anchor", "readOnly",
        "writeOnly", "deprecated", "$defs", "definitions", "strict", "name", "contentMediaType", "discriminator",
    };
    private static readonly HashSet<string> Handled = new(StringComparer.Ordinal)
    {
        "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "minLength", "maxLength",
        "enum", "const", "anyOf", "oneOf", "$ref", "nullable", "allOf",
    };
    internal static readonly JsonSerializerOptions Compact = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private JsonSchemaGrammar(JsonElement doc, string where)
    {
        _doc = doc; _where = where;
        Nodes.Add(new SchemaNode { Types = JsonTypes.All }); // AnyNode: every JSON value
    }

    /// <summary>Any JSON object (response_format json_object).</summary>
    public static JsonSchemaGrammar AnyObject()
    {
        var g = new JsonSchemaGrammar(default, "");
        g.Nodes.Add(new SchemaNode { Types = JsonTypes.Object });
        g.Root = 1;
        return g;
    }

    /// <summary>Compiles <paramref name="schema"/>; <paramref name="where"/> names it in errors (e.g. "response_format.json_schema.schema").</summary>
    public static JsonSchemaGrammar Compile(JsonElement schema, string where = "schema")
    {
        var g = new JsonSchemaGrammar(schema, where);
        g.Root = g.Node(schema, "#");
        return g;
    }

    private LlmArchInputException Error(string path, string what) => new($"{_where}: {what} at {path}");

    private int Node(JsonElement s, string path)
    {
        if (s.ValueKind == JsonValueKind.True) return AnyNode;
        if (s.ValueKind == JsonValueKind.False) throw Error(path, "the schema 'false' admits no value");
        if (s.ValueKind != JsonValueKind.Object) throw Error(path, $"a schema must be an object or a boolean, got {s.ValueKind}");
        if (s.TryGetProperty("$ref", out var r))
        {
            if (s.EnumerateObject().Any(p => p.Name != "$ref" && !Ignored.Contains(p.Name)))
                throw Error(path, "'$ref' beside other keywords is not supported");
            return Ref(r, path);
        }
        int index = Nodes.Count;
        Nodes.Add(new SchemaNode());
        Nodes[index] = Build(s, path);
        return index;
    }

    private int Ref(JsonElement r, string path)
    {
        if (r.ValueKind != JsonValueKind.String) throw Error(path, "'$ref' must be a string");
        string target = r.GetString()!;
        if (_refs.TryGetValue(target, out int known)) return known;
        JsonElement cur = _doc;
        if (target != "#")
        {
            if (!target.StartsWith("#/", StringComparison.Ordinal)) throw Error(path, $"'$ref' '{target}' is not a local reference (#/...)");
            foreach (var part in target[2..].Split('/'))
            {
                string key = part.Replace("~1", "/").Replace("~0", "~");
                if (cur.ValueKind != JsonValueKind.Object || !cur.TryGetProperty(key, out cur)) throw Error(path, $"'$ref' '{target}' does not resolve");
            }
        }
        if (cur.ValueKind == JsonValueKind.True) return _refs[target] = AnyNode;
        if (cur.ValueKind != JsonValueKind.Object) throw Error(path, $"'$ref' '{target}' is not a schema");
        int index = Nodes.Count;
        // A placeholder with the target's declared types, so an anyOf that refers back to it (recursion) can be merged.
        var declared = cur.TryGetProperty("type", out var dt) ? Types(dt, target) : cur.TryGetProperty("enum", out _) || cur.TryGetProperty("const", out _) ? JsonTypes.All : Inferred(cur);
        Nodes.Add(new SchemaNode { Types = declared });
        _refs[target] = index; // before building: recursive schemas refer back to this node
        Nodes[index] = Build(cur, target);
        return index;
    }

    private SchemaNode Build(JsonElement s, string path)
    {
        foreach (var p in s.EnumerateObject())
            if (!Handled.Contains(p.Name) && !Ignored.Contains(p.Name))
                throw Error(path, $"'{p.Name}' is not supported by constrained decoding");
        if (s.TryGetProperty("allOf", out var all))
        {
            if (all.ValueKind != JsonValueKind.Array || all.GetArrayLength() != 1 || s.EnumerateObject().Any(p => p.Name != "allOf" && !Ignored.Contains(p.Name)))
                throw Error(path, "'allOf' is supported only with a single schema and nothing beside it");
            return Nodes[Node(all[0], path + "/allOf/0")];
        }
        foreach (var alt in new[] { "anyOf", "oneOf" })
        {
            if (!s.TryGetProperty(alt, out var alts)) continue;
            if (alts.ValueKind != JsonValueKind.Array || alts.GetArrayLength() == 0) throw Error(path, $"'{alt}' must be a non-empty array");
            if (s.EnumerateObject().Any(p => p.Name != alt && !Ignored.Contains(p.Name)))
                throw Error(path, $"'{alt}' beside other keywords is not supported");
            var merged = new SchemaNode();
            int i = 0;
            foreach (var a in alts.EnumerateArray())
            {
                int ai = Node(a, $"{path}/{alt}/{i++}");
                var n = Nodes[ai];
                if (n.Literals is not null || merged.Literals is not null)
                {
                    if ((merged.Types != JsonTypes.None && merged.Literals is null) || (n.Literals is null && merged.Types != JsonTypes.None))
                        throw Error(path, $"'{alt}' mixing enum/const with other schemas is not supported");
                    merged.Literals = (merged.Literals ?? []).Concat(n.Literals!).Distinct(ByteArrayComparer.Instance).OrderBy(x => x, ByteArrayComparer.Instance).ToArray();
                    merged.Types |= n.Types;
                    continue;
                }
                var numeric = JsonTypes.Integer | JsonTypes.Number;
                var mt = merged.Types; var nt = n.Types;
                if ((mt & nt & ~numeric) != 0 || ((mt & numeric) != 0 && (nt & numeric) != 0))
                    throw Error(path, $"'{alt}' alternatives that admit the same JSON type are not supported (they must differ in type)");
                merged.Types |= nt;
                if ((nt & JsonTypes.Object) != 0) merged.ObjectFrom = ai;
                if ((nt & JsonTypes.Array) != 0) merged.ArrayFrom = ai;
                if ((nt & JsonTypes.String) != 0) merged.StringFrom = ai;
            }
            return merged;
        }
        var node = new SchemaNode();
        if (s.TryGetProperty("enum", out var en) || s.TryGetProperty("const", out en))
        {
            var values = en.ValueKind == JsonValueKind.Array && s.TryGetProperty("enum", out _) ? en.EnumerateArray().ToList() : [en];
            if (values.Count == 0) throw Error(path, "'enum' must not be empty");
            node.Literals = values.Select(v => Encoding.UTF8.GetBytes(JsonSerializer.Serialize(v, Compact)))
                .Distinct(ByteArrayComparer.Instance).OrderBy(x => x, ByteArrayComparer.Instance).ToArray();
            node.Types = JsonTypes.All;
            return node;
        }
        node.Types = s.TryGetProperty("type", out var ty) ? Types(ty, path) : Inferred(s);
        if (s.TryGetProperty("nullable", out var nb) && nb.ValueKind == JsonValueKind.True) node.Types |= JsonTypes.Null;
        if ((node.Types & JsonTypes.Object) != 0) BuildObject(node, s, path);
        if ((node.Types & JsonTypes.Array) != 0)
        {
            if (s.TryGetProperty("items", out var it)) node.Items = Node(it, path + "/items");
            node.MinItems = NonNegative(s, "minItems", path, 0);
            node.MaxItems = NonNegative(s, "maxItems", path, int.MaxValue);
            if (node.MinItems > node.MaxItems) throw Error(path, "minItems > maxItems");
        }
        if ((node.Types & JsonTypes.String) != 0)
        {
            node.MinLength = NonNegative(s, "minLength", path, 0);
            node.MaxLength = NonNegative(s, "maxLength", path, int.MaxValue);
            if (node.MinLength > node.MaxLength) throw Error(path, "minLength > maxLength");
        }
        return node;
    }

    private void BuildObject(SchemaNode node, JsonElement s, string path)
    {
        var props = new List<(byte[] Key, string Name, int Node)>();
        if (s.TryGetProperty("properties", out var ps))
        {
            if (ps.ValueKind != JsonValueKind.Object) throw Error(path, "'properties' must be an object");
            foreach (var p in ps.EnumerateObject())
            {
                string escaped = JsonSerializer.Serialize(p.Name, Compact);
                props.Add((Encoding.UTF8.GetBytes(escaped[1..^1]), p.Name, Node(p.Value, $"{path}/properties/{p.Name}")));
            }
        }
        if (props.Count > 64) throw Error(path, "more than 64 properties in one object are not supported");
        props.Sort((a, b) => ByteArrayComparer.Instance.Compare(a.Key, b.Key));
        node.PropKeys = props.Select(p => p.Key).ToArray();
        node.PropNodes = props.Select(p => p.Node).ToArray();
        if (s.TryGetProperty("required", out var req))
        {
            if (req.ValueKind != JsonValueKind.Array) throw Error(path, "'required' must be an array");
            foreach (var r in req.EnumerateArray())
            {
                int i = r.ValueKind == JsonValueKind.String ? props.FindIndex(p => p.Name == r.GetString()) : -1;
                if (i < 0) throw Error(path, $"required property {r} is not in 'properties'");
                node.Required |= 1UL << i;
            }
        }
        if (s.TryGetProperty("additionalProperties", out var ap))
            node.Additional = ap.ValueKind == JsonValueKind.False ? NoNode : Node(ap, path + "/additionalProperties");
    }

    private int NonNegative(JsonElement s, string key, string path, int dflt)
    {
        if (!s.TryGetProperty(key, out var v)) return dflt;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int n) || n < 0) throw Error(path, $"'{key}' must be a non-negative integer");
        return n;
    }

    private JsonTypes Types(JsonElement ty, string path)
    {
        JsonTypes one(JsonElement t) => t.ValueKind != JsonValueKind.String ? throw Error(path, "'type' must be a string or a list of strings") : t.GetString() switch
        {
            "object" => JsonTypes.Object, "array" => JsonTypes.Array, "string" => JsonTypes.String, "integer" => JsonTypes.Integer,
            "number" => JsonTypes.Number, "boolean" => JsonTypes.Boolean, "null" => JsonTypes.Null,
            var x => throw Error(path, $"unknown type '{x}'"),
        };
        if (ty.ValueKind == JsonValueKind.Array)
        {
            var t = JsonTypes.None;
            foreach (var e in ty.EnumerateArray()) t |= one(e);
            if (t == JsonTypes.None) throw Error(path, "'type' must not be empty");
            return t;
        }
        return one(ty);
    }

    private static JsonTypes Inferred(JsonElement s) =>
        s.TryGetProperty("properties", out _) || s.TryGetProperty("required", out _) || s.TryGetProperty("additionalProperties", out _) ? JsonTypes.Object
        : s.TryGetProperty("items", out _) ? JsonTypes.Array
        : JsonTypes.All;
}

internal sealed class ByteArrayComparer : IComparer<byte[]>, IEqualityComparer<byte[]>
{
    public static readonly ByteArrayComparer Instance = new();
    public int Compare(byte[]? a, byte[]? b) => a.AsSpan().SequenceCompareTo(b);
    public bool Equals(byte[]? a, byte[]? b) => a.AsSpan().SequenceEqual(b);
    public int GetHashCode(byte[] a) { var h = new HashCode(); h.AddBytes(a); return h.ToHashCode(); }
}
