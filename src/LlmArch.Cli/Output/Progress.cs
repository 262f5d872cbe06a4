using System.Diagnostics;
using System.Globalization;

namespace LlmArch.Cli.Output;

/// <summary>
/// A one-line progress display on stderr for long work (loading a checkpoint, init, export, bench), redrawn four times a
/// second from a timer: the label, the elapsed time and, when <c>measure</c> gives one, bytes done of a total. Drawn
/// only when stderr is a terminal (never into a log or a test's writer); erased when disposed.
/// </summary>
public sealed class Progress : IDisposable
{
    private readonly TextWriter? _err;
    private readonly string _label;
    private readonly Func<(long Done, long Total)>? _measure;
    private readonly Stopwatch _sw = Stopwatch.StartNew();
    private readonly Timer? _timer;
    private readonly object _lock = new();
    private bool _done;

    private Progress(TextWriter? err, string label, Func<(long, long)>? measure)
    {
        _err = err;
        _label = label;
        _measure = measure;
        if (err is not null) _timer = new Timer(_ => Draw(), null, 250, 250);
    }

    /// <summary>Starts a display (a no-op when stderr is not a terminal or LLMARCH_NO_PROGRESS is set).</summary>
    public static Progress Start(Invocation inv, string label, Func<(long Done, long Total)>? measure = null) =>
        new(inv.ErrIsTerminal && Environment.GetEnvironmentVariable("LLMARCH_NO_PROGRESS") is null or "" or "0" ? inv.Err : null, label, measure);

    /// <summary>Bytes written so far to a file that grows to <paramref name="total"/> bytes.</summary>
    public static Func<(long, long)> FileGrowth(string path, long total) => () =>
    {
        long n = 0;
        try { n = File.Exists(path) ? new FileInfo(path).Length : 0; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return (n, total);
    };

    private void Draw()
    {
        lock (_lock)
        {
            if (_done || _err is null) return;
            var inv = CultureInfo.InvariantCulture;
            string line = $"{_label} {_sw.Elapsed.TotalSeconds.ToString("F0", inv)}s";
            if (_measure is not null)
            {
                var (done, total) = _measure();
                if (total > 0)
                {
                    double f = Math.Clamp((double)done / total, 0, 0.999);
                    int w = 24, fill = (int)(f * w);
                    line = $"{_label} [{new string('#', fill)}{new string('.', w - fill)}] {(f * 100).ToString("F0", inv)}% " +
                           $"{Gb(done)}/{Gb(total)} GB {_sw.Elapsed.TotalSeconds.ToString("F0", inv)}s";
                }
            }
            _err.Write("\r\u001b[K" + line);
            _err.Flush();
        }
    }

    private static string Gb(long b) => (b / 1e9).ToString("F2", CultureInfo.InvariantCulture);

    public void Dispose()
    {
        _timer?.Dispose();
        lock (_lock)
        {
            if (_done) return;
            _done = true;
            if (_err is not null) { _err.Write("\r\u001b[K"); _err.Flush(); }
        }
    }
}
