namespace LlmArch.Tokenization;

/// <summary>A tokenizer.json post-processor: adds special tokens around one encoded sequence.</summary>
internal abstract class PostProcessor
{
    public abstract List<int> Process(List<int> ids);

    public static PostProcessor? FromJson(JsonConfig? cfg)
    {
        if (cfg is not { } c) return null;
        string type = c.Type;
        return type switch
        {
            "ByteLevel" => null, // only adjusts offsets
            "TemplateProcessing" => Template.Parse(c),
            "BertProcessing" => new Wrap([TokenId(c, "cls")], [TokenId(c, "sep")]),
            "RobertaProcessing" => new Wrap([TokenId(c, "cls")], [TokenId(c, "sep")]),
            "Sequence" => new SequencePost(c.Items("processors").Select(p => FromJson(p)).OfType<PostProcessor>().ToArray()),
            _ => throw c.Error("type", $"'{type}' is not supported"),
        };
    }

    /// <summary>"cls": ["[CLS]", 101] -> 101.</summary>
    private static int TokenId(JsonConfig c, string key)
    {
        var e = c.Child(key).Element;
        if (e.ValueKind != System.Text.Json.JsonValueKind.Array || e.GetArrayLength() != 2
            || e[1].ValueKind != System.Text.Json.JsonValueKind.Number || !e[1].TryGetInt32(out int id) || id < 0)
            throw c.Error(key, "must be [token, id] with a non-negative id");
        return id;
    }

    private sealed class Wrap(int[] before, int[] after) : PostProcessor
    {
        public override List<int> Process(List<int> ids) => [.. before, .. ids, .. after];
    }

    private sealed class SequencePost(PostProcessor[] items) : PostProcessor
    {
        public override List<int> Process(List<int> ids)
        {
            foreach (var p in items) ids = p.Process(ids);
            return ids;
        }
    }

    /// <summary>TemplateProcessing "single": a list of SpecialToken / Sequence pieces.</summary>
    private sealed class Template(List<int[]?> pieces) : PostProcessor
    {
        public static Template Parse(JsonConfig c)
        {
            var specials = new Dictionary<string, int[]>(StringComparer.Ordinal);
            if (c.OptionalChild("special_tokens") is { } st)
            {
                if (st.Element.ValueKind != System.Text.Json.JsonValueKind.Object) throw c.Error("special_tokens", "must be an object");
                foreach (var prop in st.Element.EnumerateObject())
                {
                    var entry = new JsonConfig(prop.Value, st.File, $"{st.Path}.{prop.Name}");
                    specials[prop.Name] = entry.Items("ids").Select(i => i.Element.ValueKind == System.Text.Json.JsonValueKind.Number && i.Element.TryGetInt32(out int v) && v >= 0 ? v
                        : throw i.Error("must be an integer id")).ToArray();
                }
            }
            var pieces = new List<int[]?>();
            foreach (var item in c.Items("single"))
            {
                if (item.Has("Sequence")) pieces.Add(null);
                else if (item.OptionalChild("SpecialToken") is { } sp)
                {
                    string id = sp.String("id");
                    pieces.Add(specials.TryGetValue(id, out var ids) ? ids : throw sp.Error("id", $"'{id}' is not in special_tokens"));
                }
                else throw item.Error("must be a Sequence or SpecialToken piece");
            }
            return new Template(pieces);
        }

        public override List<int> Process(List<int> ids)
        {
            var r = new List<int>(ids.Count + 4);
            foreach (var p in pieces)
            {
                if (p is null) r.AddRange(ids);
                else r.AddRange(p);
            }
            return r;
        }
    }
}
