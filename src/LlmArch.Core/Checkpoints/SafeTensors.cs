using System.IO.MemoryMappedFiles;
using System.Text.Json;
using LlmArch.Compute;

namespace LlmArch.Checkpoints;

/// <summary>One tensor's entry in a safetensors header.</summary>
public sealed record SafeTensorInfo(string Name, DType DType, long[] Shape, long Begin, long End);

/// <summary>
/// A safetensors file mapped into memory. The header is validated before anything is trusted: its length
/// against the file size, every dtype, every shape's byte length against its offsets, every offset against
/// the data region. Tensors are views into the mapping (no copy).
/// </summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    private readonly MemoryMappedFile? _mmf;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;
    private readonly long _dataStart;
    public string Path { get; }
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private const long MaxHeader = 100L << 20;

    /// <summary>The file's size in bytes (of the target when the path is a symlink, as in the hub cache).</summary>
    public long FileBytes { get; }

    public SafeTensorsFile(string path)
    {
        Path = path;
        if (!File.Exists(path)) throw new CheckpointFormatException($"{path}: file not found");
        // Size and mapping come from the opened handle, so a symlink (the hub cache's snapshots/ -> blobs/) is followed
        // and the file cannot change between the size check and the mapping.
        FileStream fs;
        try { fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new CheckpointFormatException($"{path}: cannot open ({e.Message})"); }
        try
        {
            long size = fs.Length;
            FileBytes = size;
            if (size < 8) throw new CheckpointFormatException($"{path}: truncated safetensors file ({size} bytes, need at least 8 for the header length)");
            Span<byte> lenBytes = stackalloc byte[8];
            fs.ReadExactly(lenBytes);
            ulong headerLen = BitConverter.ToUInt64(lenBytes);
            if (headerLen > (ulong)(size - 8))
                throw new CheckpointFormatException($"{path}: header length {headerLen} is larger than the file ({size} bytes)");
            if (headerLen > MaxHeader) throw new CheckpointFormatException($"{path}: header length {headerLen} exceeds the {MaxHeader} byte limit");
            var header = new byte[headerLen];
            fs.ReadExactly(header);
            _dataStart = 8 + (long)headerLen;
            (Tensors, Metadata) = ParseHeader(path, header, size - _dataStart);
            _mmf = MemoryMappedFile.CreateFromFile(fs, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            _view = _mmf.CreateViewAccessor(0, size, MemoryMappedFileAccess.Read);
            byte* p = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            _base = p + _view.PointerOffset;
        }
        catch
        {
            if (_mmf is null) fs.Dispose();
            throw;
        }
    }

    /// <summary>Most dimensions a tensor may have (the largest real ones have 5).</summary>
    public const int MaxRank = 8;

    /// <summary>
    /// Parses and checks a header: strict JSON (UTF-8, no lone surrogates, no duplicate names), every entry an object
    /// with a string dtype, an array shape of non-negative integers and two integer offsets, sizes that agree, offsets
    /// inside the data, no two tensors overlapping; __metadata__ an object of strings.
    /// </summary>
    internal static (Dictionary<string, SafeTensorInfo>, Dictionary<string, string>) ParseHeader(string path, byte[] header, long dataLen)
    {
        JsonDocument doc;
        try { doc = StrictJson.Parse(header, $"{path}: header", maxDepth: 8); }
        catch (ConfigException e) { throw new CheckpointFormatException(e.Message); }
        var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
        var meta = new Dictionary<string, string>(StringComparer.Ordinal);
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new CheckpointFormatException($"{path}: header is not a JSON object");
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                string name = prop.Name;
                var e = prop.Value;
                if (name == "__metadata__")
                {
                    if (e.ValueKind != JsonValueKind.Object) throw new CheckpointFormatException($"{path}: __metadata__ must be an object of strings, got {Kind(e)}");
                    foreach (var m in e.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String)
                            throw new CheckpointFormatException($"{path}: __metadata__.{m.Name} must be a string, got {Kind(m.Value)}");
                        meta[m.Name] = m.Value.GetString()!;
                    }
                    continue;
                }
                string T = $"{path}: tensor '{name}'";
                if (e.ValueKind != JsonValueKind.Object) throw new CheckpointFormatException($"{T} must be an object, got {Kind(e)}");
                if (!e.TryGetProperty("dtype", out var dt) || !e.TryGetProperty("shape", out var sh) || !e.TryGetProperty("data_offsets", out var off))
                    throw new CheckpointFormatException($"{T} lacks dtype, shape or data_offsets");
                if (dt.ValueKind != JsonValueKind.String) throw new CheckpointFormatException($"{T}: dtype must be a string, got {Kind(dt)}");
                if (!DTypes.TryParseSafetensors(dt.GetString()!, out var dtype))
                    throw new CheckpointFormatException($"{T} has unsupported dtype '{dt.GetString()}'");
                if (sh.ValueKind != JsonValueKind.Array) throw new CheckpointFormatException($"{T}: shape must be an array, got {Kind(sh)}");
                if (sh.GetArrayLength() > MaxRank) throw new CheckpointFormatException($"{T}: shape has {sh.GetArrayLength()} dimensions (at most {MaxRank})");
                var shape = new long[sh.GetArrayLength()];
                int i = 0;
                long count = 1;
                bool zero = false;
                foreach (var d in sh.EnumerateArray())
                {
                    if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v) || v < 0)
                        throw new CheckpointFormatException($"{T} has an invalid shape {sh.GetRawText()} (dimensions must be non-negative integers)");
                    shape[i++] = v;
                    if (v == 0) zero = true;
                    else if (!zero)
                        count = v > long.MaxValue / count ? throw new CheckpointFormatException($"{T} shape {sh.GetRawText()} overflows") : count * v;
                }
                if (zero) count = 0;
                if (off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2
                    || off[0].ValueKind != JsonValueKind.Number || off[1].ValueKind != JsonValueKind.Number
                    || !off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end))
                    throw new CheckpointFormatException($"{T} has invalid data_offsets {off.GetRawText()} (expected [begin, end] integers)");
                if (begin < 0 || end < begin || end > dataLen)
                    throw new CheckpointFormatException($"{T} offsets [{begin}, {end}) lie outside the {dataLen} bytes of data");
                int es = DTypes.ElementSize(dtype);
                long expect = count > long.MaxValue / Math.Max(1, es) ? -1 : count * es;
                if (end - begin != expect)
                    throw new CheckpointFormatException($"{T} is {dtype} {sh.GetRawText()} ({(expect < 0 ? "too many" : expect.ToString(System.Globalization.CultureInfo.InvariantCulture))} bytes) but its offsets span {end - begin} bytes");
                tensors[name] = new SafeTensorInfo(name, dtype, shape, begin, end);
            }
        }
        // Two tensors may not share bytes: a writer bug or a crafted file would alias weights (and a write through one
        // view would change another).
        SafeTensorInfo? prev = null;
        foreach (var t in tensors.Values.Where(t => t.End > t.Begin).OrderBy(t => t.Begin))
        {
            if (prev is not null && t.Begin < prev.End)
                throw new CheckpointFormatException($"{path}: tensors '{prev.Name}' [{prev.Begin}, {prev.End}) and '{t.Name}' [{t.Begin}, {t.End}) overlap");
            prev = t;
        }
        return (tensors, meta);
    }

    private static string Kind(JsonElement e) => e.ValueKind.ToString().ToLowerInvariant();

    /// <summary>A zero-copy view of a tensor in the mapping.</summary>
    public Tensor Get(string name)
    {
        if (!Tensors.TryGetValue(name, out var info)) throw new CheckpointFormatException($"{Path}: tensor '{name}' not found");
        Shape shape;
        try { shape = Shape.Of(info.Shape); }
        catch (Exception e) when (e is OverflowException or ArgumentException)
        { throw new CheckpointFormatException($"{Path}: tensor '{name}' shape [{string.Join(", ", info.Shape)}] is not supported ({e.Message})"); }
        return new Tensor(info.DType, shape, (nint)(_base + _dataStart + info.Begin), this, name);
    }

    public void Dispose()
    {
        if (_view is not null) { _view.SafeMemoryMappedViewHandle.ReleasePointer(); _view.Dispose(); }
        _mmf?.Dispose();
    }

    /// <summary>Writes tensors to a safetensors file (F32/BF16/any plain dtype as stored), header padded to 8 bytes.</summary>
    public static void Write(string path, IEnumerable<(string Name, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (metadata is not null)
            {
                w.WriteStartObject("__metadata__");
                foreach (var kv in metadata) w.WriteString(kv.Key, kv.Value);
                w.WriteEndObject();
            }
            long off = 0;
            foreach (var (name, t) in list)
            {
                w.WriteStartObject(name);
                w.WriteString("dtype", DTypes.SafetensorsName(t.DType));
                w.WriteStartArray("shape");
                for (int i = 0; i < t.Shape.Rank; i++) w.WriteNumberValue(t.Shape[i]);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets"); w.WriteNumberValue(off); w.WriteNumberValue(off + t.ByteCount); w.WriteEndArray();
                w.WriteEndObject();
                off += t.ByteCount;
            }
            w.WriteEndObject();
        }
        while (ms.Length % 8 != 0) ms.WriteByte((byte)' ');
        using var fs = File.Create(path);
        fs.Write(BitConverter.GetBytes((ulong)ms.Length));
        ms.Position = 0; ms.CopyTo(fs);
        foreach (var (_, t) in list)
        {
            long remaining = t.ByteCount; byte* p = (byte*)t.Ptr;
            while (remaining > 0)
            {
                int chunk = (int)Math.Min(remaining, 1 << 24);
                fs.Write(new ReadOnlySpan<byte>(p, chunk));
                p += chunk; remaining -= chunk;
            }
        }
    }
}
