using System.Text;

namespace LlmArch.Generation.Tools;

/// <summary>Parses the text of one tool block (between its markers) into calls, or returns null when it is malformed.</summary>
public delegate List<(string Name, string ArgumentsJson)>? ToolBlockParser(string body);

/// <summary>A kind of tool block in the output: opening marker, closing marker (null: runs to the end of the output).</summary>
public sealed record ToolBlock(string Open, string? Close, ToolBlockParser Parse);

/// <summary>
/// The parser of every marker-delimited format: an optional reasoning block (<c>&lt;think&gt;...&lt;/think&gt;</c>,
/// <c>[THINK]...[/THINK]</c>; possibly already open when the prompt ends inside it) and tool blocks
/// (<c>&lt;tool_call&gt;...&lt;/tool_call&gt;</c>, DeepSeek's and Kimi's call sections, MiniMax's
/// <c>&lt;minimax:tool_call&gt;</c>, Mistral's <c>[TOOL_CALLS]</c>, ...) whose bodies a per-family function parses.
/// Text outside them is the answer. A block left open at the end is parsed if it can be, else kept as text.
/// </summary>
public sealed class MarkupParser : OutputParser
{
    private enum Mode { Content, Reasoning, Tool }

    private readonly string? _thinkOpen, _thinkClose;
    private readonly IReadOnlyList<ToolBlock> _blocks;
    private readonly bool _jsonAtStart;
    private readonly ToolBlockParser? _jsonAtStartParser;
    private readonly List<string> _contentMarkers = new();
    private readonly StringBuilder _buf = new();
    private readonly TrimmedStream _content = new(OutputEventKind.Content), _reasoning = new(OutputEventKind.Reasoning);
    private Mode _mode;
    private ToolBlock? _block;
    private bool _sawContent;

    /// <param name="startInReasoning">the prompt ends inside an open reasoning block (R1, MiniMax-M2, Qwen3 thinking-2507 templates).</param>
    /// <param name="jsonAtStart">Llama 3.x: an answer that starts with '{' is a tool call if it parses as one.</param>
    public MarkupParser(string? thinkOpen, string? thinkClose, bool startInReasoning, IReadOnlyList<ToolBlock> blocks,
        ToolBlockParser? jsonAtStart = null)
    {
        _thinkOpen = thinkOpen; _thinkClose = thinkClose; _blocks = blocks;
        _jsonAtStart = jsonAtStart is not null; _jsonAtStartParser = jsonAtStart;
        if (thinkOpen is not null) _contentMarkers.Add(thinkOpen);
        foreach (var b in blocks) _contentMarkers.Add(b.Open);
        _mode = startInReasoning && thinkClose is not null ? Mode.Reasoning : Mode.Content;
    }

    public override void Push(string text, List<OutputEvent> events)
    {
        _buf.Append(text);
        Drain(events, final: false);
    }

    public override void Finish(List<OutputEvent> events)
    {
        Drain(events, final: true);
        switch (_mode)
        {
            case Mode.Reasoning:
                _reasoning.Add(_buf.ToString(), events); break;
            case Mode.Tool:
                EmitBlock(_buf.ToString(), closed: false, events); break;
            default:
                _content.Add(_buf.ToString(), events); break;
        }
        _buf.Clear();
    }

    private void Drain(List<OutputEvent> events, bool final)
    {
        while (_buf.Length > 0)
        {
            if (_mode == Mode.Reasoning)
            {
                int i = IndexOf(_buf, _thinkClose!, 0);
                if (i < 0)
                {
                    int keep = PartialMarkerSuffix(_buf, 0, [_thinkClose!]);
                    if (_buf.Length - keep > 0) _reasoning.Add(Take(_buf.Length - keep), events);
                    return;
                }
                _reasoning.Add(Take(i), events);
                _buf.Remove(0, _thinkClose!.Length);
                _reasoning.EndSegment();
                _mode = Mode.Content;
                continue;
            }
            if (_mode == Mode.Tool)
            {
                if (_block!.Close is null) return; // runs to the end of the output
                int i = IndexOf(_buf, _block.Close, 0);
                if (i < 0) return;
                string body = Take(i);
                _buf.Remove(0, _block.Close.Length);
                EmitBlock(body, closed: true, events);
                continue;
            }
            // Content: Llama-style JSON calls are recognised by the first non-space character of the answer.
            if (_jsonAtStart && !_sawContent)
            {
                int f = 0;
                while (f < _buf.Length && char.IsWhiteSpace(_buf[f])) f++;
                if (f == _buf.Length) return;
                if (_buf[f] == '{')
                {
                    _buf.Remove(0, f);
                    _block = new ToolBlock("", null, _jsonAtStartParser!);
                    _mode = Mode.Tool;
                    _sawContent = true;
                    continue;
                }
            }
            int best = -1; string? marker = null; ToolBlock? block = null;
            if (_thinkOpen is not null) { int i = IndexOf(_buf, _thinkOpen, 0); if (i >= 0) { best = i; marker = _thinkOpen; } }
            foreach (var b in _blocks)
            {
                int i = IndexOf(_buf, b.Open, 0);
                if (i >= 0 && (best < 0 || i < best)) { best = i; marker = b.Open; block = b; }
            }
            if (best < 0)
            {
                int keep = final ? 0 : PartialMarkerSuffix(_buf, 0, _contentMarkers);
                if (_buf.Length - keep > 0) { AddContent(Take(_buf.Length - keep), events); }
                return;
            }
            if (best > 0) AddContent(Take(best), events);
            _buf.Remove(0, marker!.Length);
            if (block is null) { _content.EndSegment(); _mode = Mode.Reasoning; }
            else { _block = block; _mode = Mode.Tool; }
        }
    }

    private void AddContent(string s, List<OutputEvent> events)
    {
        if (!_sawContent && s.Any(c => !char.IsWhiteSpace(c))) _sawContent = true;
        _content.Add(s, events);
    }

    private void EmitBlock(string body, bool closed, List<OutputEvent> events)
    {
        List<(string, string)>? calls = null;
        try { calls = _block!.Parse(body); } catch (Exception e) when (e is FormatException or System.Text.Json.JsonException or ArgumentException) { }
        if (calls is null || calls.Count == 0)
        {
            // Not a call after all: keep the text (with its markers) as part of the answer.
            _content.Add(_block!.Open + body + (closed ? _block.Close : ""), events);
        }
        else
        {
            foreach (var (n, a) in calls) events.Add(OutputEvent.Call(n, a));
            _content.EndSegment();
        }
        _mode = Mode.Content;
        _block = null;
    }

    private string Take(int n)
    {
        string s = _buf.ToString(0, n);
        _buf.Remove(0, n);
        return s;
    }
}
