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

    private static (Dictionary<string, SafeTensorInfo>, Dictionary<string, string>) ParseHeader(string path, byte[] header, long dataLen)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(header); }
        catch (JsonException e) { throw new CheckpointFormatException($"{path}: header is not valid JSON ({e.Message})"); }
        var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
        var meta = new Dictionary<string, string>(StringComparer.Ordinal);
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new CheckpointFormatException($"{path}: header is not a JSON object");
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind == JsonValueKind.Object)
                        foreach (var m in prop.Value.EnumerateObject()) meta[m.Name] = m.Value.ToString();
                    continue;
                }
                var e = prop.Value;
                string name = prop.Name;
                if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty("dtype", out var dt) || !e.TryGetProperty("shape", out var sh) || !e.TryGetProperty("data_offsets", out var off))
                    throw new CheckpointFormatException($"{path}: tensor '{name}' lacks dtype, shape or data_offsets");
                if (!DTypes.TryParseSafetensors(dt.GetString() ?? "", out var dtype))
                    throw new CheckpointFormatException($"{path}: tensor '{name}' has unsupported dtype '{dt.GetString()}'");
                var shape = new long[sh.GetArrayLength()];
                int i = 0;
                long count = 1;
                foreach (var d in sh.EnumerateArray())
                {
                    if (!d.TryGetInt64(out long v) || v < 0) throw new CheckpointFormatException($"{path}: tensor '{name}' has an invalid shape {sh}");
                    shape[i++] = v;
                    count = count > 0 && v > long.MaxValue / Math.Max(1, count) ? throw new CheckpointFormatException($"{path}: tensor '{name}' shape {sh} overflows") : count * v;
                }
                if (off.GetArrayLength() != 2 || !off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end))
                    throw new CheckpointFormatException($"{path}: tensor '{name}' has invalid data_offsets {off}");
                if (begin < 0 || end < begin || end > dataLen)
                    throw new CheckpointFormatException($"{path}: tensor '{name}' offsets [{begin}, {end}) lie outside the {dataLen} bytes of data");
                long expect = count * DTypes.ElementSize(dtype);
                if (end - begin != expect)
                    throw new CheckpointFormatException($"{path}: tensor '{name}' is {dtype} {sh} ({expect} bytes) but its offsets span {end - begin} bytes");
                tensors[name] = new SafeTensorInfo(name, dtype, shape, begin, end);
            }
        }
        return (tensors, meta);
    }

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
