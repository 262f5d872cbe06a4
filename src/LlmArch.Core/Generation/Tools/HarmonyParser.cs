using System.Text;

namespace LlmArch.Generation.Tools;

/// <summary>
/// gpt-oss's harmony output: a sequence of messages, each a header (<c>&lt;|channel|&gt;analysis</c>,
/// <c>&lt;|channel|&gt;final</c>, <c>&lt;|channel|&gt;commentary to=functions.NAME &lt;|constrain|&gt;json</c>, the
/// recipient possibly before the channel) then <c>&lt;|message|&gt;</c> and a body up to <c>&lt;|end|&gt;</c>,
/// <c>&lt;|call|&gt;</c> or <c>&lt;|return|&gt;</c>; later messages start with <c>&lt;|start|&gt;assistant</c>. The
/// prompt ends with <c>&lt;|start|&gt;assistant</c>, so the output begins with the first header. Analysis is reasoning,
/// final (and commentary without a recipient) is the answer, a body addressed to <c>functions.NAME</c> is a call.
/// </summary>
public sealed class HarmonyParser(bool parseTools) : OutputParser
{
    private const string Message = "<|message|>", Start = "<|start|>";
    private static readonly string[] BodyEnds = ["<|end|>", "<|call|>", "<|return|>"];
    private enum Mode { Header, Body, Between }

    private readonly StringBuilder _buf = new();
    private readonly TrimmedStream _content = new(OutputEventKind.Content), _reasoning = new(OutputEventKind.Reasoning);
    private Mode _mode = Mode.Header;
    private string _channel = "", _recipient = "";

    public override void Push(string text, List<OutputEvent> events)
    {
        _buf.Append(text);
        Drain(events);
    }

    public override void Finish(List<OutputEvent> events)
    {
        Drain(events);
        if (_mode == Mode.Body) EndBody(_buf.ToString(), events);
        else if (_mode == Mode.Header && _buf.Length > 0 && !_buf.ToString().Contains("<|channel|>"))
            _content.Add(_buf.ToString(), events); // no harmony structure at all: keep the text
        _buf.Clear();
    }

    private void Drain(List<OutputEvent> events)
    {
        while (true)
        {
            switch (_mode)
            {
                case Mode.Between:
                {
                    int s = IndexOf(_buf, Start, 0);
                    if (s < 0) { if (PartialMarkerSuffix(_buf, 0, [Start]) < _buf.Length) KeepTail(Start); return; }
                    _buf.Remove(0, s + Start.Length);
                    _mode = Mode.Header;
                    continue;
                }
                case Mode.Header:
                {
                    int m = IndexOf(_buf, Message, 0);
                    if (m < 0) return;
                    ParseHeader(_buf.ToString(0, m));
                    _buf.Remove(0, m + Message.Length);
                    _mode = Mode.Body;
                    continue;
                }
                default:
                {
                    int best = -1, len = 0;
                    foreach (var e in BodyEnds)
                    {
                        int i = IndexOf(_buf, e, 0);
                        if (i >= 0 && (best < 0 || i < best)) { best = i; len = e.Length; }
                    }
                    if (best < 0)
                    {
                        if (!IsCall)
                        {
                            int keep = PartialMarkerSuffix(_buf, 0, BodyEnds);
                            string part = _buf.ToString(0, _buf.Length - keep);
                            _buf.Remove(0, part.Length);
                            StreamBody(part, events);
                        }
                        return;
                    }
                    string body = _buf.ToString(0, best);
                    _buf.Remove(0, best + len);
                    EndBody(body, events);
                    _mode = Mode.Between;
                    continue;
                }
            }
        }
    }

    private void KeepTail(string marker)
    {
        int keep = PartialMarkerSuffix(_buf, 0, [marker]);
        _buf.Remove(0, _buf.Length - keep);
    }

    private bool IsCall => parseTools && _recipient.StartsWith("functions.", StringComparison.Ordinal);

    private void ParseHeader(string header)
    {
        _channel = ""; _recipient = "";
        int c = header.IndexOf("<|channel|>", StringComparison.Ordinal);
        if (c >= 0)
        {
            string rest = header[(c + 11)..].TrimStart();
            int e = 0;
            while (e < rest.Length && !char.IsWhiteSpace(rest[e]) && rest[e] != '<') e++;
            _channel = rest[..e];
        }
        int to = header.IndexOf("to=", StringComparison.Ordinal);
        if (to >= 0)
        {
            int e = to + 3;
            while (e < header.Length && !char.IsWhiteSpace(header[e]) && header[e] != '<') e++;
            _recipient = header[(to + 3)..e];
        }
    }

    private void StreamBody(string text, List<OutputEvent> events)
    {
        if (text.Length == 0) return;
        if (_channel == "analysis") _reasoning.Add(text, events);
        else _content.Add(text, events);
    }

    private void EndBody(string body, List<OutputEvent> events)
    {
        if (IsCall)
        {
            string name = _recipient[10..];
            string? args = null;
            try { args = ToolBodies.ArgumentsText(System.Text.Json.Nodes.JsonNode.Parse(body.Trim())); }
            catch (System.Text.Json.JsonException) { }
            if (args is not null && name.Length > 0)
            {
                events.Add(OutputEvent.Call(name, args));
                _content.EndSegment();
            }
            else _content.Add(body, events);
        }
        else
        {
            StreamBody(body, events);
            (_channel == "analysis" ? _reasoning : _content).EndSegment();
        }
    }
}
